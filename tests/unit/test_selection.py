from __future__ import annotations

import pytest

from ringctl.selection import Candidate, band_distance, choose, plot, report


def cands():
    # epoch 1: high entropy (under-trained); epochs 2 and 3 in band; epoch 4 collapsed entropy
    return [
        Candidate("e1", 1, 1000, 0.72, 0.20, rl_tokens=600, reward_gain=0.10),
        Candidate("e2", 2, 2000, 0.48, 0.35, rl_tokens=600, reward_gain=0.08),
        Candidate("e3", 3, 3000, 0.33, 0.40, rl_tokens=600, reward_gain=0.08),
        Candidate("e4", 4, 4000, 0.12, 0.42, rl_tokens=600, reward_gain=0.01),
    ]


def test_token_efficiency_rule_band_then_accuracy_after_the_probe_then_efficiency():
    # e2 and e3 are in the band with equal gain: e3 ends the probe higher (0.40 + 0.08 against 0.35 + 0.08)
    assert choose(cands()).checkpoint == "e3"
    assert cands()[1].token_efficiency == pytest.approx(600 / 2000)
    # a larger gain counts by its size: e2 moved by 0.10 reaches 0.45 < 0.48, by 0.15 it reaches 0.50 > 0.48
    cs = cands()
    cs[1] = Candidate("e2", 2, 2000, 0.48, 0.35, rl_tokens=600, reward_gain=0.10)
    assert choose(cs).checkpoint == "e3"
    cs[1] = Candidate("e2", 2, 2000, 0.48, 0.35, rl_tokens=600, reward_gain=0.15)
    assert choose(cs).checkpoint == "e2"
    # the same accuracy after the probe: the tie goes to the higher token efficiency (fewer SFT tokens)
    cs[1] = Candidate("e2", 2, 2000, 0.48, 0.40, rl_tokens=600, reward_gain=0.08)
    assert choose(cs).checkpoint == "e2"
    # no probe: probe accuracy alone
    plain = [Candidate(c.checkpoint, c.epoch, c.sft_tokens, c.entropy, c.accuracy) for c in cands()]
    assert choose(plain).checkpoint == "e3"


def test_nearest_to_band_when_none_inside():
    cs = [Candidate("a", 1, 100, 0.9, 0.1, 50, 0.5), Candidate("b", 2, 200, 0.6, 0.2, 50, 0.0),
          Candidate("c", 3, 300, 0.1, 0.3, 50, 0.9)]
    # b (0.1 above) and c (0.2 below): only b is nearest, even though c ends the probe higher
    assert band_distance(0.6, (0.3, 0.5)) == pytest.approx(0.1)
    assert choose(cs).checkpoint == "b"


def test_other_metrics():
    assert choose(cands(), "accuracy").checkpoint == "e4"
    assert choose(cands(), "reward-gain").checkpoint == "e1"
    assert choose(cands(), "entropy").checkpoint == "e3"  # |0.33-0.4| < |0.48-0.4|
    with pytest.raises(ValueError, match="unknown metric"):
        choose(cands(), "loss")


def test_report_shape_and_plot(tmp_path):
    doc = report(cands(), choose(cands()), "token-efficiency")
    assert doc["selected"] == "e3" and doc["metric"] == "token-efficiency"
    assert set(doc["candidates"][0]) >= {"checkpoint", "epoch", "sft_tokens", "entropy", "accuracy",
                                         "token_efficiency", "reward_gain"}
    png = plot(doc, tmp_path / "sel.png")
    assert png.stat().st_size > 1000 and png.read_bytes()[:4] == b"\x89PNG"


def test_table_marks_the_selected_checkpoint_and_the_band():
    from ringctl.selection import table

    doc = report(cands(), choose(cands()), "token-efficiency")
    t = table(doc, (0.3, 0.5))
    assert [row[0] for row in t.rows] == ["1", "2", "3", "4"]
    assert t.rows[2][-1] == "[bold green]<- selected[/]" and t.row_styles == [None, None, "bold", None]
    assert [row[2] for row in t.rows] == ["0.720", "0.480 *", "0.330 *", "0.120"]
    assert t.notes == ["* inside the entropy band"]
    far = table(doc, (0.9, 1.0))
    assert far.notes == ["none inside the entropy band 0.9-1.0: ranked those nearest to it"]
