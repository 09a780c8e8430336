"""The reasoning RL stage's resume at its last state: a run killed after the final state was saved but before the
stage returned trains nothing on resume and returns the outputs already on disk; with the final checkpoint
missing the resume would do zero steps, which is an error."""

from __future__ import annotations

import json
import shutil
from types import SimpleNamespace

import pytest

from ringctl.pipeline.context import StageContext
from ringctl.recipe.schema import ResourcesConfig
from ringctl.train.config import BackendsConfig, ModelConfig


def _recipe():
    return SimpleNamespace(model=ModelConfig(), backends=BackendsConfig(), resources=ResourcesConfig(), seed=0,
                           deterministic=True)


def test_rl_resume_at_the_final_state_returns_outputs(tmp_path):
    import stages.rl as rl
    from ringctl.data.synth import generate_rl
    from ringctl.train.models import load_model_and_tokenizer

    model, tok = load_model_and_tokenizer(ModelConfig())
    init = tmp_path / "init"
    model.save_pretrained(init)
    tok.save_pretrained(init)
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text("".join(json.dumps(r) + "\n"
                               for r in generate_rl(40, seed=0, domains=["arithmetic"])))
    cfg = rl.Config(init="select.checkpoint", prompts="filter.rl", steps=2, save_every=1, eval_every=2,
                    prompts_per_step=2, samples_per_prompt=2, token_budget=64, max_new_tokens=16,
                    max_prompt_tokens=64, lr=1e-4, heldout_fraction=0.1, eval_prompts_count=4, reward_workers=1)
    inputs = {"select.checkpoint": init, "filter.rl": prompts}

    ctx = StageContext.for_test(tmp_path, "rl", inputs=inputs, recipe=_recipe())
    out = rl.run(cfg, ctx)
    steps = [r["step"] for r in ctx.tracker.history() if "reward/mean" in r]
    assert steps == [1, 2] and (out["final"].path / "config.json").is_file()

    ctx2 = StageContext.for_test(tmp_path, "rl", inputs=inputs, recipe=_recipe())
    again = rl.run(cfg, ctx2)
    assert again["final"].path == out["final"].path and again["final"].meta == {"step": 2}
    assert [r["step"] for r in ctx2.tracker.history() if "reward/mean" in r] == [1, 2]

    shutil.rmtree(out["final"].path)
    with pytest.raises(RuntimeError, match="zero steps"):
        rl.run(cfg, StageContext.for_test(tmp_path, "rl", inputs=inputs, recipe=_recipe()))
