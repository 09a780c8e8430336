"""Data-parallel RL on 2 gloo ranks (torchrun), through bench/rl_scaling.py's worker (one RLTrainer.step of the tiny
model after one SFT epoch, reference model, entropy bonus and router losses on):
- budget_scope global: the all-reduced gradient equals the single-process one (float32, <= 1e-5) and so does the
  parameter update; exactly phi tokens enter the loss over both ranks;
- budget_scope per_rank: each rank fills its own phi (2 x phi in all); in both scopes the ranks' prompts are
  disjoint and cover the step's prompts;
- micro-batches of several token sizes give the gradient of no micro-batching.
"""

from __future__ import annotations

import pytest

pytestmark = [pytest.mark.slow, pytest.mark.timeout(1800)]


@pytest.fixture(scope="module")
def init(tmp_path_factory):
    from bench.rl_scaling import start_checkpoint

    return start_checkpoint(tmp_path_factory.mktemp("rl-dp"))


@pytest.fixture(scope="module")
def one(init):
    from bench.rl_scaling import run_case

    return run_case(init, 1, "global")


def test_two_ranks_global_scope_equal_one_process(init, one):
    from bench.rl_scaling import max_abs_diff, overlap, run_case, update_diff_where_gradient_is_signal

    two = run_case(init, 2, "global")
    assert one["metrics"]["zero_advantage_fraction"] < 1.0  # some groups carry a policy gradient
    assert max(float(g.abs().max()) for g in one["grads"].values()) > 1e-4
    assert max_abs_diff(one["grads"], two["grads"]) <= 1e-5
    # AdamW's first update is lr * g / (|g| + eps): compared where the gradient is signal (bench/rl_scaling.py)
    assert update_diff_where_gradient_is_signal(one, two) <= 1e-5
    assert one["metrics"]["train/tokens"] == two["metrics"]["train/tokens"] == 512
    assert two["metrics"]["reward/mean"] == pytest.approx(one["metrics"]["reward/mean"], abs=1e-12)
    assert overlap(two["seen"]) == 0 and sorted(two["seen"][0] + two["seen"][1]) == sorted(one["seen"][0])


def test_two_ranks_per_rank_scope_fill_their_own_budget(init):
    from bench.rl_scaling import overlap, run_case

    two = run_case(init, 2, "per_rank")
    assert two["metrics"]["train/tokens"] == 2 * 512
    assert overlap(two["seen"]) == 0 and len(two["seen"][0]) == len(two["seen"][1]) == 4


@pytest.mark.parametrize("micro", [48, 160])
def test_micro_batches_do_not_change_the_gradient(init, one, micro):
    from bench.rl_scaling import max_abs_diff, run_case

    assert max_abs_diff(one["grads"], run_case(init, 1, "global", micro)["grads"]) <= 1e-5


@pytest.mark.parametrize("zero", [2, 3])
def test_two_ranks_deepspeed_global_scope_equal_one_process(init, one, zero):
    """The same step through DeepSpeed (gloo) with micro-batches: hand-set accumulation boundaries; under ZeRO-3
    the policy and the reference model are built partitioned and the HF rollout engine samples from a gathered
    copy. The gradient equals one torch process's."""
    from bench.rl_scaling import max_abs_diff, run_case

    two = run_case(init, 2, "global", 64, train="deepspeed", zero=zero)
    assert max_abs_diff(one["grads"], two["grads"]) <= 1e-5
    assert two["metrics"]["train/tokens"] == 512
    if zero == 3:  # the long-context settings: activation checkpointing and 16-token head chunks, same gradient
        long = run_case(init, 2, "global", 64, train="deepspeed", zero=zero, checkpointing=True, chunk=16)
        assert max_abs_diff(one["grads"], long["grads"]) <= 1e-5


@pytest.fixture(scope="module")
def rm(tmp_path_factory):
    from bench._tiny_start import save_tiny_reward_model

    return save_tiny_reward_model(tmp_path_factory.mktemp("rm") / "model")


@pytest.fixture(scope="module")
def one_rm(init, rm):
    from bench.rl_scaling import run_case

    return run_case(init, 1, "global", rm=rm)


@pytest.mark.parametrize("train", ["torch", "deepspeed"])
def test_general_rl_with_a_reward_model_two_ranks_equal_one_process(init, rm, one_rm, train):
    """General RL's step (arithmetic + IFEval prompts scored by verifiers, open-ended ones by a reward model,
    normalize_then_sum) on 2 ranks equals one process; through DeepSpeed ZeRO-3 the reward model is partitioned
    too, and ranks with different numbers of RM batches keep in step (dummy forwards)."""
    from bench.rl_scaling import max_abs_diff, run_case

    one = one_rm
    assert one["metrics"]["reward/reward_model/mean"] != 0 and "reward/verifier/mean" in one["metrics"]
    two = run_case(init, 2, "global", 64, rm=rm, train=train, zero=3)
    assert max_abs_diff(one["grads"], two["grads"]) <= 1e-5
    for key in ("reward/mean", "reward/reward_model/mean", "reward/reward_model/length_corr"):
        assert two["metrics"][key] == pytest.approx(one["metrics"][key], abs=1e-5), key
