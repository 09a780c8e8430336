"""Non-finite losses and gradient norms (ringctl.train.numerics): stop with one error naming the stage, the step,
which value and the value, before the update; or, under skip_step, withhold the update (parameters and optimizer
state untouched, gradients zeroed, the schedule advanced) and count it; the chaos NaN injection point."""

from __future__ import annotations

import math

import pytest
import torch

from ringctl import chaos
from ringctl.errors import EXIT_STAGE_FAILED, NonFiniteError
from ringctl.train.engine import OptimSpec, build_engine
from ringctl.train.numerics import SKIPPED_METRIC, NonFiniteGuard, check_finite


def test_finite_values_pass_and_a_non_finite_one_stops_naming_stage_step_and_value():
    assert check_finite("sft", 3, "stop", loss=2.5, grad_norm=0.7) is True
    assert check_finite("sft", 3, "stop", loss=None, grad_norm=None) is True
    with pytest.raises(NonFiniteError) as err:
        check_finite("sft", 5, "stop", loss=float("nan"), grad_norm=1.0)
    first = str(err.value).splitlines()[0]
    assert first == "stage 'sft': non-finite loss nan at step 5: training stopped there."
    assert "ringctl resume" in str(err.value) and "skip_step" in str(err.value)
    assert err.value.exit_code == EXIT_STAGE_FAILED
    with pytest.raises(NonFiniteError, match=r"non-finite grad norm inf at step 7"):
        check_finite("rl", 7, "stop", loss=0.1, grad_norm=float("inf"))
    with pytest.raises(NonFiniteError, match=r"non-finite loss -inf and grad norm nan at step 1"):
        check_finite("rm", 1, "stop", loss=-math.inf, grad_norm=math.nan)


def test_skip_step_withholds_unless_the_update_was_already_applied(capsys):
    assert check_finite("sft", 4, "skip_step", loss=float("nan"), grad_norm=float("nan")) is False
    assert "step 4: non-finite loss nan and grad norm nan: update skipped" in capsys.readouterr().err
    with pytest.raises(NonFiniteError, match="could not withhold this update"):
        check_finite("sft", 4, "skip_step", grad_norm=float("nan"), can_skip=False)


def _model() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(6, 8), torch.nn.Tanh(), torch.nn.Linear(8, 3))


def _loss(engine, scale: float = 1.0):
    g = torch.Generator().manual_seed(1)
    x, y = torch.randn(8, 6, generator=g), torch.randn(8, 3, generator=g)
    return ((engine(x) - y) ** 2).mean() * scale


def test_a_skipped_update_leaves_parameters_and_optimizer_state_and_advances_the_schedule():
    spec = OptimSpec(lr=0.1, warmup_steps=4, total_steps=10)
    engine = build_engine(_model(), spec)
    guard = NonFiniteGuard("sft", "skip_step")
    loss = _loss(engine)
    engine.backward(loss)
    engine.step(check=guard.at(1).check(float(loss.detach())))  # a finite step: applied
    before = {k: v.clone() for k, v in engine.module.state_dict().items()}
    optim_before = {k: v.clone() for k, v in engine.optimizer.state_dict()["state"][0].items()}
    assert guard.skipped == 0 and guard.metrics() == {SKIPPED_METRIC: 0.0}

    at = guard.at(2)
    loss = at.inject(_loss(engine)) * float("nan")  # what a NaN loss does: NaN gradients
    engine.backward(loss)
    norm = engine.step(check=at.check(float(loss.detach())))
    assert math.isnan(norm) and guard.skipped == 1 and guard.metrics() == {SKIPPED_METRIC: 1.0}
    for k, v in engine.module.state_dict().items():
        torch.testing.assert_close(v, before[k], atol=0, rtol=0)
    for k, v in engine.optimizer.state_dict()["state"][0].items():
        torch.testing.assert_close(v, optim_before[k], atol=0, rtol=0)
    assert all(p.grad is None for p in engine.module.parameters())
    assert engine.steps == 2 and engine.lr() == pytest.approx(0.075)  # the schedule moved on (warm-up 3 of 4)

    loss = _loss(engine)  # and training goes on from the unchanged weights
    engine.backward(loss)
    engine.step(check=guard.at(3).check(float(loss.detach())))
    assert all(torch.isfinite(p).all() for p in engine.module.parameters())
    assert any(not torch.equal(v, before[k]) for k, v in engine.module.state_dict().items())


def test_stop_raises_before_the_optimizer_applies_the_update():
    engine = build_engine(_model(), OptimSpec(lr=0.1))
    before = {k: v.clone() for k, v in engine.module.state_dict().items()}
    guard = NonFiniteGuard("rm", "stop")
    engine.accumulate(_loss(engine), last=False)
    loss = _loss(engine, scale=float("inf"))
    with pytest.raises(NonFiniteError, match=r"stage 'rm': non-finite loss inf and grad norm nan at step 1"):
        engine.accumulate(loss, last=True, check=guard.at(1).check(float(loss.detach())))
    for k, v in engine.module.state_dict().items():
        torch.testing.assert_close(v, before[k], atol=0, rtol=0)
    assert engine.optimizer.state_dict()["state"] == {}
    assert guard.metrics() == {}  # under stop there is no skip count to log


def test_chaos_nan_loss_names_stage_step_and_optionally_rank(monkeypatch):
    one = torch.tensor(1.0)
    assert chaos.nan_loss(one, "sft", 5) is one  # not armed
    monkeypatch.setenv(chaos.ENV_NAN_AT, "sft:5,rl:2:1")
    monkeypatch.setenv("RANK", "0")
    assert torch.isnan(chaos.nan_loss(one, "sft", 5))
    assert chaos.nan_loss(one, "sft", 4) is one and chaos.nan_loss(one, "other", 5) is one
    assert chaos.nan_loss(one, "rl", 2) is one  # armed for rank 1 only
    monkeypatch.setenv("RANK", "1")
    assert torch.isnan(chaos.nan_loss(one, "rl", 2))
    monkeypatch.setenv(chaos.ENV_NAN_AT, "sft")
    with pytest.raises(ValueError, match="<stage>:<step>"):
        chaos.nan_loss(one, "sft", 5)


def test_on_nonfinite_is_a_validated_field_of_every_training_stage():
    from pydantic import ValidationError

    import stages.reward_model as reward_model
    import stages.rl as rl
    import stages.sft as sft

    assert sft.Config(data="f.sft").on_nonfinite == "stop"
    assert rl.Config(init="s.final", prompts="f.rl", on_nonfinite="skip_step").on_nonfinite == "skip_step"
    assert reward_model.Config(pairs="p.preferences").on_nonfinite == "stop"
    with pytest.raises(ValidationError, match="'stop' or 'skip_step'"):
        sft.Config(data="f.sft", on_nonfinite="skip")
