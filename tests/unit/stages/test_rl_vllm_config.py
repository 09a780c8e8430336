"""RL with vLLM rollouts: settings vLLM cannot honour are refused by `ringctl validate`, before anything runs."""

from __future__ import annotations

import pytest

from ringctl.errors import RecipeError
from ringctl.recipe.loader import load_recipe


def test_top_p_below_one_with_vllm_rollouts_is_refused_at_the_field():
    with pytest.raises(RecipeError) as e:
        load_recipe("recipes/tiny.yaml", ["backends.rollout=vllm", "+stages.reasoning_rl.top_p=0.9"])
    text = str(e.value)
    assert "stages.reasoning_rl.top_p" in text and "truncated" in text


def test_top_p_below_one_is_fine_with_hf_and_top_p_one_with_vllm():
    load_recipe("recipes/tiny.yaml", ["+stages.reasoning_rl.top_p=0.9"])
    assert load_recipe("recipes/tiny.yaml", ["backends.rollout=vllm"]).recipe.backends.rollout == "vllm"
