"""`ringctl select-sft --checkpoints A B --prompts P.jsonl` without a run, as a user types it: two tiny epoch
checkpoints measured with the recipe defaults (a small probe), the selection in --json and as a table; bad input
is one clear message with exit code 2 before any model is loaded."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import pytest

from tests.helpers import ringctl, ringctl_json

PROBE = ["--num-prompts", "2", "--samples-per-prompt", "2", "--max-new-tokens", "12"]


@pytest.fixture(scope="module")
def epoch_ckpts(tmp_path_factory) -> list[Path]:
    """Two tiny checkpoints laid out as the SFT stage writes them (epoch_info.json beside the weights)."""
    from ringctl.train.checkpoint import EPOCH_INFO
    from ringctl.train.config import ModelConfig, TinyModelConfig
    from ringctl.train.models import save_tiny

    model = ModelConfig(tiny=TinyModelConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                                             num_key_value_heads=1, moe_intermediate_size=32, intermediate_size=64,
                                             num_experts=2, num_experts_per_tok=1, max_position_embeddings=256))
    root = tmp_path_factory.mktemp("sft")
    out = []
    for epoch in (1, 2):
        d = save_tiny(model, root / f"epoch-{epoch}", seed=epoch)
        (d / EPOCH_INFO).write_text(json.dumps({"epoch": epoch, "sft_tokens": 1000 * epoch}))
        out.append(d)
    return out


@pytest.fixture(scope="module")
def prompts(tmp_path_factory) -> Path:
    from ringctl.data import synth
    from ringctl.data.records import write_jsonl

    path = tmp_path_factory.mktemp("prompts") / "rl.jsonl"
    write_jsonl(path, synth.generate_rl(4, seed=3, domains=["arithmetic"]))
    return path


def test_select_sft_on_plain_checkpoints_without_a_run(epoch_ckpts, prompts, tmp_path):
    a, b = epoch_ckpts
    proc, doc = ringctl_json("select-sft", "--checkpoints", a, "--checkpoints", b, "--prompts", prompts,
                             "--metric", "accuracy", *PROBE, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert doc["metric"] == "accuracy"
    cands = doc["candidates"]
    assert [c["checkpoint"] for c in cands] == [str(a), str(b)]
    assert [(c["epoch"], c["sft_tokens"]) for c in cands] == [(1, 1000), (2, 2000)]
    for c in cands:  # measured now: entropy of the checkpoint's own samples, probe pass@1, no C3PO probe
        assert math.isfinite(c["entropy"]) and c["entropy"] > 0
        assert 0.0 <= c["accuracy"] <= 1.0
        assert c["rl_tokens"] == 0 and c["reward_gain"] is None
    # the accuracy rule: the most accurate candidate, the fewer SFT tokens on a tie
    best = max(cands, key=lambda c: (c["accuracy"], -c["sft_tokens"]))
    assert doc["selected"] == best["checkpoint"]

    # the same command as a table (the seeded measurement gives the same choice)
    table = ringctl("select-sft", "--checkpoints", a, "--checkpoints", b, "--prompts", prompts,
                    "--metric", "accuracy", *PROBE, cwd=tmp_path)
    assert table.returncode == 0, table.stderr[-3000:]
    chosen = [line for line in table.stdout.splitlines() if "<- selected" in line]
    assert len(chosen) == 1 and re.search(r"\d+", chosen[0]).group() == str(best["epoch"]), table.stdout


def test_select_sft_bad_input_is_one_message_exit_2(epoch_ckpts, prompts, tmp_path):
    a, _ = epoch_ckpts
    plain = tmp_path / "not-an-epoch"
    plain.mkdir()
    proc, doc = ringctl_json("select-sft", "--checkpoints", a, "--checkpoints", plain, "--prompts", prompts,
                             *PROBE, cwd=tmp_path)
    assert proc.returncode == 2 and "epoch_info.json" in doc["error"] and str(plain) in doc["error"]
    proc, doc = ringctl_json("select-sft", "--checkpoints", a, "--prompts", tmp_path / "missing.jsonl", *PROBE,
                             cwd=tmp_path)
    assert proc.returncode == 2 and "missing.jsonl" in doc["error"]
    proc, doc = ringctl_json("select-sft", "--checkpoints", a, *PROBE, cwd=tmp_path)
    assert proc.returncode == 2 and "--prompts" in doc["error"]
