"""RL with vLLM rollouts on GPUs: 2 torchrun ranks, nccl between them, one vLLM engine per rank
(distributed_executor_backend="external_launcher", tensor_parallel_size 1), through bench/rl_scaling.py's worker
(`run_case(..., rollout="vllm", device="cuda")`), as tests/vllm/test_rl_vllm.py does with gloo on CPU: the ranks draw
the global rollouts of one process (one vLLM seed per global row, row_offset / total_rows) and their all-reduced
gradient is the single process's.

Needs 2 GPUs. Two ranks on ONE GPU are refused twice over, whatever gpu_memory_utilization allows (vLLM's own
memory check, `request_memory` in vllm/v1/worker/utils.py, would let two small engines share a device):
- vLLM 0.32's GPU worker takes its device from torchrun's LOCAL_RANK under external_launcher
  (`ExecutorWithExternalLauncher._distributed_args`) and asserts `local_rank < torch.accelerator.device_count()`
  (`Worker.init_device`, vllm/v1/worker/gpu_worker.py): rank 1 would ask for cuda:1;
- NCCL refuses two ranks of one communicator on the same device ("Duplicate GPU detected").
The 2-rank gloo version runs on CPU in `make test-vllm` (tests/vllm/test_rl_vllm.py).
"""

from __future__ import annotations

import pytest
import torch

pytestmark = [pytest.mark.gpu, pytest.mark.vllm, pytest.mark.slow, pytest.mark.timeout(900)]

TWO_GPUS = pytest.mark.skipif(
    not torch.cuda.is_available() or torch.cuda.device_count() < 2,
    reason="needs 2 GPUs: vLLM's GPU worker puts torchrun rank i on cuda:LOCAL_RANK and asserts that device exists "
           "(vllm/v1/worker/gpu_worker.py Worker.init_device), and NCCL refuses two ranks on one GPU")


@pytest.fixture(scope="module")
def init(tmp_path_factory):
    pytest.importorskip("vllm")
    from bench.rl_scaling import start_checkpoint

    return start_checkpoint(tmp_path_factory.mktemp("rl-vllm-gpu"))


@TWO_GPUS
def test_two_nccl_ranks_draw_the_rollouts_of_one_process(init):
    from bench.rl_scaling import max_abs_diff, overlap, run_case

    one = run_case(init, 1, "global", rollout="vllm", steps=2, device="cuda", timeout=600)
    two = run_case(init, 2, "global", rollout="vllm", steps=2, device="cuda", timeout=600)
    assert one["metrics"]["zero_advantage_fraction"] < 1.0
    assert overlap(two["seen"]) == 0 and sorted(two["seen"][0] + two["seen"][1]) == sorted(one["seen"][0])
    # the same tokens (float32 tiny model: a GPU kernel's batch-size-dependent rounding would have to flip a
    # seeded draw to change them)
    for key in ("reward/mean", "response_length/mean", "train/tokens"):
        assert two["metrics"][key] == pytest.approx(one["metrics"][key], abs=1e-9), key
    grads_one = {n: g.float().cpu() for n, g in one["grads"].items()}
    grads_two = {n: g.float().cpu() for n, g in two["grads"].items()}
    assert max_abs_diff(grads_one, grads_two) <= 1e-4  # nccl all-reduce vs one process, float32 on GPU
    for run in (one, two):  # every step, each rank's engine samples from the trainer's weights
        for m in [run["metrics"], *run["later"]]:
            assert m["rollout/logprob_abs_diff"] <= 1e-3
