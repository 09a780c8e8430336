"""The rl stage's reward sources in a recipe: errors before anything runs, at the file:line of the field."""

from __future__ import annotations

import textwrap

import pytest

from ringctl.errors import RecipeError
from ringctl.recipe.loader import load_recipe

RECIPE = """
name: t
stages:
  filter:
    kind: data_filter
    sources:
      - {{type: synthetic, task: rl, n: 10}}
      - {{type: synthetic, task: general, n: 10}}
    splits:
      rl_reasoning: {{sources: [synthetic-rl]}}
      rl_general: {{sources: [synthetic-general]}}
  sft:
    kind: sft
    data: filter.sft
  general_rl:
    kind: rl
    init: sft.final
    prompts: filter.{split}
    token_budget: 64
    max_new_tokens: 32
    rewards:
      - {{type: verifier}}
{extra}
"""


def _load(tmp_path, split="rl_general", extra=""):
    path = tmp_path / "r.yaml"
    path.write_text(textwrap.dedent(RECIPE).format(split=split, extra=extra).lstrip())
    return load_recipe(path)


def _errors(tmp_path, **kw) -> list[str]:
    with pytest.raises(RecipeError) as e:
        _load(tmp_path, **kw)
    return [str(p) for p in e.value.problems]


def test_a_domain_without_reward_source_is_an_error_at_the_rewards_field(tmp_path):
    (err,) = _errors(tmp_path)
    assert err.startswith(f"{tmp_path}/r.yaml:21:") and "stages.general_rl.rewards: " in err, err
    assert "no reward source scores the domain(s) ['chat']" in err
    # reasoning prompts only: every domain has a verifier
    _load(tmp_path, split="rl_reasoning")


def test_reward_model_source_must_be_a_reward_models_model_output(tmp_path):
    errs = _errors(tmp_path, extra="      - {type: reward_model, model: sft.final}")
    (err,) = [e for e in errs if "not a reward model" in e]
    assert ":22:" in err and "stages.general_rl.rewards[1].model: sft.final is the 'final' output of a sft stage" in err


def test_declared_domains_follow_the_split_rules(tmp_path):
    recipe = _load(tmp_path, split="rl_reasoning").recipe
    flt = recipe.stages["filter"]
    assert flt.declared_domains("rl_general", recipe) == {"ifeval", "chat"}
    assert flt.declared_domains("rl_reasoning", recipe) == {"arithmetic", "countdown"}
    assert flt.declared_domains("all", recipe) == {"ifeval", "chat", "arithmetic", "countdown"}


def test_reward_model_without_chat_template_is_an_error_where_it_is_read_through_one(tmp_path):
    import json

    rm_dir = tmp_path / "rm"
    rm_dir.mkdir()
    (rm_dir / "config.json").write_text(json.dumps({"architectures": ["Qwen3ForSequenceClassification"],
                                                    "num_labels": 1}))
    (rm_dir / "tokenizer_config.json").write_text(json.dumps({"model_max_length": 512}))
    rm_stage = f"""
  rm:
    kind: reward_model
    path: {rm_dir}
    template: plain"""
    source = "      - {type: reward_model, model: rm.model%s}"
    errs = _errors(tmp_path, extra=(source % "") + rm_stage)
    (err,) = errs
    assert ":22:" in err and "stages.general_rl.rewards[1].model: reward model" in err and "no chat template" in err
    assert "template: plain" in err
    _load(tmp_path, extra=(source % ", template: plain") + rm_stage)  # both read it as plain text: fine
