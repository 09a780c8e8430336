"""The difficulty step: pass rates of a real (tiny, SFT-trained) checkpoint decide what is kept."""

from __future__ import annotations

import pytest

from ringctl.data.filters import Difficulty, FilterRun, apply_steps


def test_difficulty_config_needs_exactly_one_checkpoint():
    with pytest.raises(ValueError, match="exactly one"):
        Difficulty()
    with pytest.raises(ValueError, match="lo"):
        Difficulty(checkpoint_path="/x", lo=0.8, hi=0.2)
    assert Difficulty(checkpoint="sft.final").checkpoint.stage == "sft"


def test_difficulty_keeps_prompts_inside_the_band(tmp_path):
    from ringctl.data import synth
    from ringctl.train.config import ModelConfig
    from ringctl.train.models import build_tiny

    model, tok = build_tiny(ModelConfig(), seed=0)  # untrained: solves nothing
    model.save_pretrained(tmp_path / "ckpt")
    tok.save_pretrained(tmp_path / "ckpt")
    records = synth.generate_rl(6, seed=1, domains=["arithmetic"])
    run = FilterRun()
    step = Difficulty(checkpoint_path=str(tmp_path / "ckpt"), samples=2, max_new_tokens=8, batch_prompts=4)
    kept = list(apply_steps(iter(records), [step], run))
    stats = run.steps[0].to_dict()
    assert kept == [] and stats["dropped"] == 6
    assert stats["reasons"] == {"too hard (never solved)": 6}
    assert stats["extra"]["pass_rate_histogram"] == {"0.00": 6}


def test_pass_rate_band_rule():
    from ringctl.data.filters.difficulty import _DifficultyFilter

    default = _DifficultyFilter(Difficulty(checkpoint_path="/x"))
    assert default._keep(0.0) == "too hard (never solved)"
    assert default._keep(1.0) == "too easy (always solved)"
    assert default._keep(0.5) is None
    band = _DifficultyFilter(Difficulty(checkpoint_path="/x", lo=0.25, hi=0.75))
    assert band._keep(0.125) == "too hard (pass rate < 0.25)"
    assert band._keep(0.875) == "too easy (pass rate > 0.75)"
    assert band._keep(0.25) is None and band._keep(0.75) is None
