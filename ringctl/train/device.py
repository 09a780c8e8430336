"""The one device rule of every stage: where this rank's models and tensors live.

    setting (resources.device)   CUDA present          no CUDA
    auto                         cuda:LOCAL_RANK       cpu
    cuda                         cuda:LOCAL_RANK       error, never a silent CPU run
    cpu                          cpu                   cpu

SFT, reasoning and general RL, the reward model, select_sft's probe, evaluation and the data filter's difficulty
step all place their models with `rank_device`, and torch.distributed's backend follows the device it returns
(`dist_backend`: nccl for cuda, gloo for cpu). A rank whose LOCAL_RANK has no GPU is an error too (more processes
per node than visible GPUs), as is `cpu` with the DeepSpeed engine on a CUDA machine (DeepSpeed places the model
on its accelerator, whatever the setting says).
"""

from __future__ import annotations

import os
from typing import Any

SETTINGS = ("auto", "cpu", "cuda")


class DeviceUnavailable(RuntimeError):
    """The device a setting asks for is not there (or the engine would not honour it)."""


def rank_device(setting: str = "auto", local_rank: int | None = None, *, field: str = "resources.device",
                train_backend: str | None = None):
    """The torch.device this rank computes on under `setting` (auto | cpu | cuda); `local_rank` defaults to
    $LOCAL_RANK (0 without a launcher). On CUDA it also makes that GPU the current one. `field` names the setting
    in errors; `train_backend` (backends.train) lets a setting DeepSpeed would ignore be refused."""
    import torch

    if setting not in SETTINGS:
        raise ValueError(f"{field} must be one of {', '.join(SETTINGS)}, got {setting!r}")
    if local_rank is None:
        local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    cuda = torch.cuda.is_available()
    if setting == "cpu" or not cuda:
        if setting == "cuda":
            raise DeviceUnavailable(f"{field} is 'cuda' but torch sees no CUDA device (torch {torch.__version__}, "
                                    f"CUDA build {torch.version.cuda or 'none'}, CUDA_VISIBLE_DEVICES="
                                    f"{os.environ.get('CUDA_VISIBLE_DEVICES', '(unset)')}); set it to cpu to run on "
                                    f"the CPU")
        if cuda and train_backend == "deepspeed":
            raise DeviceUnavailable(f"{field} is 'cpu' but backends.train is deepspeed, which trains on CUDA when "
                                    f"CUDA is present; use backends.train: torch on the CPU, or set {field} to auto")
        return torch.device("cpu")
    count = torch.cuda.device_count()
    if not 0 <= local_rank < count:
        raise DeviceUnavailable(f"{field} is {setting!r}: this rank (LOCAL_RANK {local_rank}) has no GPU of its "
                                f"own: {count} visible; start at most {count} processes per node")
    torch.cuda.set_device(local_rank)
    return torch.device("cuda", local_rank)


def dist_backend(device: Any) -> str:
    """torch.distributed's backend for ranks on `device`: nccl for CUDA tensors, gloo for CPU tensors."""
    import torch

    return "nccl" if torch.device(device).type == "cuda" else "gloo"
