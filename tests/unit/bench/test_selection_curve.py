"""bench/selection_curve.py's pure parts: which stages of the tiny recipe it keeps and drops, overrides that the real
recipe loader accepts and that make the select stage hand over one given epoch, the RL tokens and token efficiency
of each held-out evaluation, and the verdict on the chosen epoch. (The bench itself runs `ringctl run`: opt-in.)"""

from __future__ import annotations

import math

import pytest

from bench.selection_curve import rl_points, selection_overrides, stage_roles, start_from_epoch_overrides, verdict
from tests.conftest import REPO

TINY = REPO / "recipes" / "tiny.yaml"


@pytest.fixture(scope="module")
def roles():
    from ringctl.recipe.loader import load_recipe

    return stage_roles(load_recipe(TINY).recipe.stages)


def test_tiny_recipe_roles(roles):
    assert (roles["select"], roles["sft"], roles["rl"]) == ("select", "sft", "reasoning_rl")
    assert sorted(roles["drop_select"]) == ["evaluate", "general_rl", "heldout", "prefs", "reasoning_rl", "rm"]
    assert sorted(roles["drop_rl"]) == ["evaluate", "general_rl", "heldout", "prefs", "rm"]


def test_overrides_load_and_pick_the_given_entropy(roles):
    from ringctl.recipe.loader import load_recipe

    first = load_recipe(TINY, selection_overrides(roles, 7, 3)).recipe
    assert first.seed == 7 and first.stages["sft"].epochs == 3
    assert list(first.stages) == ["filter", "sft", "select"]

    entropy = 0.05512345678901234
    ovr = start_from_epoch_overrides(roles, 7, 3, entropy, rl_steps=20, eval_every=10)
    again = load_recipe(TINY, ovr).recipe
    assert list(again.stages) == ["filter", "sft", "select", "reasoning_rl"]
    sel, rl = again.stages["select"], again.stages["reasoning_rl"]
    assert sel.metric == "entropy" and tuple(sel.entropy_band) == (entropy, entropy) and sel.probe_steps == 0
    assert (rl.steps, rl.eval_every, str(rl.init)) == (20, 10, "select.checkpoint")
    # what the selection measures is unchanged, so it measures the same entropies as the first run
    for key in ("num_prompts", "samples_per_prompt", "max_new_tokens", "temperature", "top_p"):
        assert getattr(sel, key) == getattr(first.stages["select"], key)


def test_recipe_defaults_are_kept_when_not_given(roles):
    ovr = start_from_epoch_overrides(roles, 1, None, 0.1, rl_steps=None, eval_every=None)
    assert not any(o.startswith(("stages.sft.epochs", "stages.reasoning_rl.")) for o in ovr)


def test_rl_points_sum_tokens_up_to_each_evaluation():
    rows = [{"step": 0, "eval/reward": 0.5, "eval/reward_stderr": 0.03}]
    rows += [{"step": s, "train/tokens": 1000 + s} for s in range(1, 5)]
    rows[2]["eval/reward"], rows[2]["eval/reward_stderr"] = 0.6, 0.02  # step 2
    rows[4]["eval/reward"], rows[4]["eval/reward_stderr"] = 0.7, 0.01  # step 4
    curve = [{"step": r["step"], "reward": r["eval/reward"], "stderr": r["eval/reward_stderr"]}
             for r in rows if "eval/reward" in r]
    pts = rl_points(curve, rows, sft_tokens=10_000)
    assert [(p["step"], p["rl_tokens"], p["pass1"]) for p in pts] == [(0, 0, 0.5), (2, 2003, 0.6), (4, 4010, 0.7)]
    assert [p["token_efficiency"] for p in pts] == [0.0, 0.2003, 0.401]


def _epoch(n: int, end: float, se: float) -> dict:
    return {"epoch": n, "rl": [{"step": 0, "pass1": 0.1, "stderr": 0.01}, {"step": 20, "pass1": end, "stderr": se}]}


def test_verdict_within_and_outside_one_standard_error():
    epochs = [_epoch(1, 0.50, 0.03), _epoch(2, 0.62, 0.03), _epoch(3, 0.60, 0.02)]
    v = verdict(epochs, chosen_epoch=3)
    assert (v["best_epoch"], v["chosen_within_1se"]) == (2, True) and v["gap"] == pytest.approx(0.02)
    assert v["gap_in_combined_se"] == pytest.approx(round(0.02 / math.hypot(0.03, 0.02), 2))
    v = verdict(epochs, chosen_epoch=1)
    assert (v["best_epoch"], v["chosen_within_1se"], v["gap"]) == (2, False, 0.12)
    assert verdict(epochs, chosen_epoch=2)["chosen_within_1se"] is True
