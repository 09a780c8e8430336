"""ringctl/rl/trainer.py, one process: RLTrainer.step on the tiny model (built from its config) with the C3PO
planner (exactly phi tokens in the loss, leftovers deferred with their advantages) and the GRPO planner (every
response whole, no budget), each updating the policy."""

from __future__ import annotations

import pytest
import torch

from ringctl.data.synth import generate_rl
from ringctl.rl.hyper import RLHyper
from ringctl.rl.trainer import RLTrainer, build_train_engine, plan_step
from ringctl.rollout.generation import build_rollout_engine
from ringctl.train.config import ModelConfig
from ringctl.train.models import load_model_and_tokenizer


def _trainer(**hyper) -> RLTrainer:
    torch.manual_seed(0)
    policy, tok = load_model_and_tokenizer(ModelConfig())
    hp = RLHyper(prompts_per_step=4, samples_per_prompt=4, max_new_tokens=12, max_prompt_tokens=64, lr=1e-3,
                 kl_beta=0.0, reward_workers=1, **hyper)
    return RLTrainer(policy, tok, build_train_engine(policy, None, hp, 2), build_rollout_engine(policy, tok, None), hp)


def _records() -> list[dict]:
    return [dict(r) for r in generate_rl(4, 0, domains=["arithmetic"])]


def _changed(trainer: RLTrainer, step) -> bool:
    before = [p.detach().clone() for p in trainer.policy.parameters()]
    out = step()
    return out, any(not torch.equal(a, b) for a, b in zip(before, trainer.policy.parameters(), strict=True))


def test_c3po_step_trains_exactly_phi_tokens_and_defers_the_rest():
    trainer = _trainer(token_budget=24, leftover="defer")
    (metrics, deferred), changed = _changed(trainer, lambda: trainer.step(_records(), [], step_seed=1))
    assert changed
    assert metrics["train/tokens"] == 24 and metrics["train/budget_shortfall"] == 0
    assert deferred and metrics["train/deferred"] == len(deferred)
    assert all(r.deferred_steps == 1 for r in deferred)
    # the next step trains the deferred responses first, with the advantages they were scored with
    kept = {id(r): r.advantage for r in deferred}
    metrics2, _ = trainer.step(_records(), deferred, step_seed=2)
    assert metrics2["train/tokens"] == 24 and all(kept[id(r)] == r.advantage for r in deferred)


def test_grpo_step_trains_every_response_whole():
    trainer = _trainer(algorithm="grpo", token_budget=24)
    (metrics, deferred), changed = _changed(trainer, lambda: trainer.step(_records(), [], step_seed=1))
    assert changed and deferred == []
    rollouts = 4 * 4
    assert metrics["train/tokens"] == pytest.approx(metrics["response_length/mean"] * rollouts)
    assert "train/budget_shortfall" not in metrics


def test_plan_step_scales_the_loss_by_algorithm_and_scope():
    hp = RLHyper(token_budget=10, max_new_tokens=8, budget_scope="global")
    _, scaling = plan_step([], [], hp, rank=0, world=1)
    assert (scaling.normalisation, scaling.phi, scaling.loss_scale, scaling.phi_total) == ("token_budget", 10, 1.0, 10)
    _, per_rank = plan_step([], [], hp.model_copy(update={"budget_scope": "per_rank"}), rank=0, world=1)
    assert per_rank.phi_total == 10
    _, grpo = plan_step([], [], hp.model_copy(update={"algorithm": "grpo"}), rank=0, world=1)
    assert (grpo.normalisation, grpo.phi, grpo.phi_total) == ("per_response", None, None)
