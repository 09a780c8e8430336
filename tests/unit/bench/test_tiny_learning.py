"""bench/tiny_learning.py's reading of the evaluate stage's report: the product's margin over the best other row and
over the best SFT checkpoint (every sft.* row, each epoch when the table lists sft.checkpoints), in standard errors
of the difference. (The bench itself runs whole pipelines: opt-in, `make test-multiseed`.)"""

from __future__ import annotations

import json
import math

import pytest

from bench.tiny_learning import final_against_the_rest, held_out_claim


def _stages(tmp_path, cells: dict[str, tuple[float, float]], extra: tuple = ()) -> dict:
    rows = [{"checkpoint": c, "benchmark": b, "pass@1": p, "stderr": se}
            for c, (p, se) in cells.items() for b in ("heldout", "gsm8k")]
    rows += [{"checkpoint": c, "benchmark": b, "pass@1": p, "stderr": se} for b, c, p, se in extra]
    report = tmp_path / "report.json"
    report.write_text(json.dumps({"results": rows}))
    return {"evaluate": {"kind": "evaluate", "outputs": {"report": str(report)}}, "sft": {"kind": "sft"}}


def test_margins_against_the_best_other_row_and_the_best_sft_epoch(tmp_path):
    cells = {"sft.checkpoints/epoch-1": (0.10, 0.02), "sft.checkpoints/epoch-2": (0.40, 0.03),
             "sft.checkpoints/epoch-3": (0.35, 0.03), "select.checkpoint": (0.35, 0.03),
             "reasoning_rl.final": (0.60, 0.03), "general_rl.final": (0.62, 0.04)}
    out = final_against_the_rest(_stages(tmp_path, cells))
    assert out["final_checkpoint"] == "general_rl.final" and list(out["evaluation"]) == list(cells)
    assert out["closest_other"] == "reasoning_rl.final"
    assert out["final_margin_in_stderr"] == pytest.approx(round(0.02 / math.hypot(0.04, 0.03), 2))
    # the best SFT row is epoch 2, not the last epoch nor the first row
    assert out["closest_sft"] == "sft.checkpoints/epoch-2"
    assert out["final_over_sft_in_stderr"] == pytest.approx(round(0.22 / math.hypot(0.04, 0.03), 2))


def test_a_table_without_sft_rows_measures_against_its_first_row(tmp_path):
    cells = {"base": (0.2, 0.02), "rl": (0.5, 0.03)}
    out = final_against_the_rest(_stages(tmp_path, cells))
    assert out["closest_sft"] == "base" and out["final_margin_in_stderr"] == out["final_over_sft_in_stderr"] > 0


def test_no_evaluate_stage_gives_nothing(tmp_path):
    assert final_against_the_rest({"sft": {"kind": "sft"}}) == {}


def test_the_claim_is_read_on_the_held_out_mean_when_the_table_has_it(tmp_path):
    cells = {"sft.checkpoints/epoch-1": (0.30, 0.02), "reasoning_rl.final": (0.60, 0.03),
             "general_rl.final": (0.58, 0.03)}
    assert held_out_claim(_stages(tmp_path, cells))["claim_benchmark"] == "heldout"
    mean = [("heldout_mean", "sft.checkpoints/epoch-1", 0.25, 0.015),
            ("heldout_mean", "reasoning_rl.final", 0.40, 0.02), ("heldout_mean", "general_rl.final", 0.52, 0.02)]
    out = held_out_claim(_stages(tmp_path, cells, mean))
    assert out["claim_benchmark"] == "heldout_mean" and set(out["evaluations"]) == {"heldout_mean", "heldout"}
    assert out["closest_other"] == "reasoning_rl.final" and out["final_margin_in_stderr"] > 0
    assert out["evaluations"]["heldout"]["final_margin_in_stderr"] < 0  # on reasoning alone it is second
    assert held_out_claim({}) == {}
