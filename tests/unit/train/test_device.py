"""The one device rule (ringctl.train.device): auto | cpu | cuda x CUDA present or not, LOCAL_RANK, DeepSpeed."""

from __future__ import annotations

import pytest
import torch

from ringctl.train.device import DeviceUnavailable, dist_backend, rank_device


@pytest.fixture
def gpus(monkeypatch):
    """Pretend torch sees `n` GPUs (0: none); records the GPU made current."""
    current = []

    def set_gpus(n: int) -> list:
        monkeypatch.setattr(torch.cuda, "is_available", lambda: n > 0)
        monkeypatch.setattr(torch.cuda, "device_count", lambda: n)
        monkeypatch.setattr(torch.cuda, "set_device", lambda i: current.append(i))
        return current

    return set_gpus


def test_auto_is_cuda_of_the_local_rank_when_cuda_is_present(gpus, monkeypatch):
    current = gpus(2)
    assert rank_device("auto", 1) == torch.device("cuda", 1) and current == [1]
    monkeypatch.setenv("LOCAL_RANK", "0")
    assert rank_device("auto") == torch.device("cuda", 0) and current == [1, 0]
    assert rank_device() == torch.device("cuda", 0)  # auto is the default


def test_auto_is_cpu_without_cuda(gpus):
    current = gpus(0)
    assert rank_device("auto", 0) == torch.device("cpu") and current == []


def test_cpu_is_cpu_even_with_cuda_present(gpus):
    current = gpus(2)
    assert rank_device("cpu", 1) == torch.device("cpu") and current == []
    assert rank_device("cpu", 1, train_backend="torch") == torch.device("cpu")


def test_cuda_is_cuda_of_the_local_rank(gpus, monkeypatch):
    current = gpus(4)
    monkeypatch.setenv("LOCAL_RANK", "3")
    assert rank_device("cuda") == torch.device("cuda", 3) and current == [3]


def test_cuda_without_cuda_is_an_error_naming_the_setting(gpus):
    gpus(0)
    with pytest.raises(DeviceUnavailable, match=r"resources\.device is 'cuda' but torch sees no CUDA device.*cpu"):
        rank_device("cuda", 0)
    with pytest.raises(DeviceUnavailable, match=r"^the step's device is 'cuda'"):
        rank_device("cuda", 0, field="the step's device")


def test_a_rank_without_a_gpu_of_its_own_is_an_error(gpus):
    gpus(2)
    with pytest.raises(DeviceUnavailable, match=r"LOCAL_RANK 2\) has no GPU of its own: 2 visible"):
        rank_device("auto", 2)
    with pytest.raises(DeviceUnavailable, match="LOCAL_RANK 5"):
        rank_device("cuda", 5)


def test_cpu_with_deepspeed_on_a_cuda_machine_is_refused(gpus):
    """DeepSpeed would put the model on its accelerator (CUDA) whatever the setting says."""
    gpus(1)
    with pytest.raises(DeviceUnavailable, match="backends.train is deepspeed"):
        rank_device("cpu", 0, train_backend="deepspeed")
    gpus(0)  # no CUDA: DeepSpeed runs on the CPU, as the setting says
    assert rank_device("cpu", 0, train_backend="deepspeed") == torch.device("cpu")


def test_unknown_setting_is_an_error():
    with pytest.raises(ValueError, match="must be one of auto, cpu, cuda, got 'gpu'"):
        rank_device("gpu", 0)


def test_process_group_backend_follows_the_device():
    assert dist_backend(torch.device("cuda", 1)) == "nccl"
    assert dist_backend("cpu") == "gloo" and dist_backend(torch.device("cpu")) == "gloo"
