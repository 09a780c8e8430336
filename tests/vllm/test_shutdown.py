"""Between checkpoints (evaluation, selection) an engine is shut down and the next one built in the same process,
which may hold ringctl's own torch.distributed group (torchrun; external_launcher). vLLM's teardown would destroy
that default group and `del llm` alone frees nothing (vLLM froze the garbage collector): VLLMRolloutEngine.shutdown
must release the engine and keep the group."""

from __future__ import annotations

import gc

import pytest

pytestmark = [pytest.mark.vllm, pytest.mark.timeout(900)]


def test_shutdown_frees_the_engine_and_keeps_ringctls_process_group(tiny_checkpoints, tmp_path):
    import torch
    import torch.distributed as dist

    from ringctl.rollout.base import SamplingParams
    from ringctl.rollout.vllm import VLLMRolloutEngine

    _, paths, _ = tiny_checkpoints
    params = SamplingParams(temperature=1.0, max_new_tokens=16, seed=5)
    dist.init_process_group("gloo", init_method=f"file://{tmp_path}/store", rank=0, world_size=1)
    try:
        first = VLLMRolloutEngine(str(paths[0]), dtype="float32", max_model_len=256)
        assert first.llm.llm_engine.vllm_config.parallel_config.distributed_executor_backend == "external_launcher"
        drawn = [r.response_ids for r in first.generate([[5, 6, 7]], n=2, params=params)]
        first.shutdown()
        assert first.llm is None and gc.get_freeze_count() == 0
        assert dist.is_initialized()  # ringctl's group survived vLLM's teardown
        t = torch.ones(1)
        dist.all_reduce(t)
        assert t.item() == 1.0
        second = VLLMRolloutEngine(str(paths[0]), dtype="float32", max_model_len=256)  # the next checkpoint's
        assert [r.response_ids for r in second.generate([[5, 6, 7]], n=2, params=params)] == drawn
        second.shutdown()
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()
