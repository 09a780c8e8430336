"""stages.reward_model's Config: one source of the model, local paths checked before anything runs, the seeded
held-out split (no torch here)."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest
from pydantic import ValidationError

import stages.reward_model as rm
from ringctl.train.config import BackendsConfig
from ringctl.train.runtime import split_heldout


def test_the_model_comes_from_path_or_from_training_on_pairs():
    with pytest.raises(ValidationError, match="needs `path:`.*or `pairs:`"):
        rm.Config()
    with pytest.raises(ValidationError, match="`init:` is the starting point of training"):
        rm.Config(path="/models/rm", init="sft.final")
    with pytest.raises(ValidationError, match="nothing is left to train on"):
        rm.Config(pairs="prefs.preferences", heldout_fraction=1.0)
    assert rm.Config(pairs="prefs.preferences").trains
    wrapped = rm.Config(path="Skywork/Skywork-Reward-V2-Qwen3-0.6B", pairs="prefs.preferences", heldout_fraction=1)
    assert not wrapped.trains and wrapped.external_files() == []  # a hub id is checked at run time
    with pytest.raises(ValidationError):
        rm.Config(pairs="prefs.preferences", learning_rate=1e-3)  # extra=forbid


def test_a_local_path_is_an_input_and_is_checked(tmp_path):
    recipe = SimpleNamespace(backends=BackendsConfig())
    causal = tmp_path / "causal"
    causal.mkdir()
    (causal / "config.json").write_text(json.dumps({"architectures": ["Qwen3MoeForCausalLM"]}))
    (causal / "chat_template.jinja").write_text("{{ messages }}")
    cfg = rm.Config(path=str(causal))
    assert cfg.external_files() == [str(causal)]
    problems = cfg.validate_for(recipe, 1)
    assert problems and all(p.startswith(f"path {causal}: ") for p in problems)
    assert "no *ForSequenceClassification entry" in problems[0]
    # a missing directory is left to the input check (which names the line)
    assert rm.Config(path=str(tmp_path / "missing")).validate_for(recipe, 1) == []
    zero3 = SimpleNamespace(backends=BackendsConfig(train="deepspeed", deepspeed={"zero_stage": 3}))
    assert "ZeRO 0-2" in rm.Config(pairs="p.preferences").validate_for(zero3, 2)[0]


def test_heldout_split_is_seeded_and_disjoint():
    train, held = split_heldout(600, 0.1, rm.heldout_seed(1))
    assert len(held) == 60 and len(train) == 540 and not set(train) & set(held)
    assert split_heldout(600, 0.1, rm.heldout_seed(1)) == (train, held)
    assert split_heldout(600, 0.1, rm.heldout_seed(2))[1] != held
    assert split_heldout(5, 1.0, rm.heldout_seed(0)) == ([], [0, 1, 2, 3, 4])
    assert split_heldout(5, 0.0, rm.heldout_seed(0)) == ([0, 1, 2, 3, 4], [])
    assert len(split_heldout(3, 0.01, rm.heldout_seed(0))[1]) == 1  # a positive fraction holds out at least one pair


def test_preflight_rows():
    rows = rm.Config(pairs="p.preferences", batch_pairs=16, micro_batch_pairs=4).preflight(None, 2)
    assert rows[0]["ok"] and "2 micro-batches" in rows[0]["detail"]
    assert not rm.Config(pairs="p.preferences", batch_pairs=1).preflight(None, 2)[0]["ok"]
