"""report.json is recomputable from samples.jsonl: every pass@1 and pass@k, by the unbiased estimator written out
independently here (math.comb), for random score patterns; plus the table, markdown and MLflow metric names."""

from __future__ import annotations

import json
import math
import random
from collections import defaultdict

import pytest

from ringctl.display import table_text
from ringctl.eval import report
from ringctl.eval.run import metric_key, metrics_for_tracking


def _samples(rng: random.Random, checkpoint: str, bench: str, problems: int, n: int) -> list[dict]:
    rows = []
    for p in range(problems):
        rate = rng.choice([0.0, 0.1, 0.5, 0.9, 1.0])
        for s in range(n):
            score = float(rng.random() < rate)
            answer = rng.choice(["1", "2", None])
            rows.append({"checkpoint": checkpoint, "benchmark": bench, "problem_id": f"{bench}/{p}", "sample": s,
                         "response": f"... \\boxed{{{answer}}}", "extracted": answer, "score": score, "reason": "",
                         "finished": rng.random() < 0.8, "response_tokens": rng.randint(1, 50)})
    rng.shuffle(rows)  # the report must not depend on the order of the rows
    return rows


def recompute(samples_path, row) -> tuple[float, dict[str, float]]:
    per = defaultdict(list)
    for line in open(samples_path, encoding="utf-8"):
        s = json.loads(line)
        if s["checkpoint"] == row["checkpoint"] and s["benchmark"] == row["benchmark"]:
            per[s["problem_id"]].append(s["score"])
    n = row["n"]
    assert len(per) == row["num_problems"] and all(len(v) == n for v in per.values())
    pass1 = sum(sum(v) / n for v in per.values()) / len(per)
    passk = {k: sum(1 - math.comb(n - int(sum(v)), int(k)) / math.comb(n, int(k)) for v in per.values()) / len(per)
             for k in row["pass@k"]}
    return pass1, passk


def test_every_figure_of_report_json_recomputes_from_samples_jsonl(tmp_path):
    rng = random.Random(0)
    infos = [{"name": "gsm8k", "n": 8, "ks": [1, 2, 4, 8], "kind": "answer", "domain": "math",
              "sampling": {"temperature": 1.0, "top_p": 1.0, "max_new_tokens": 16, "seed": None}},
             {"name": "heldout", "n": 5, "ks": [1, 3, 5], "kind": "answer", "domain": "arithmetic",
              "sampling": {"temperature": 1.0, "top_p": 1.0, "max_new_tokens": 16, "seed": None}}]
    checkpoints = [("sft.final", "/x/sft"), ("reasoning_rl.final", "/x/rl")]
    samples = [s for c, _ in checkpoints for i in infos for s in _samples(rng, c, i["name"], 23, i["n"])]
    rows = report.build_rows(samples, checkpoints, infos, str(tmp_path / report.SAMPLES), {"gsm8k": 1, "heldout": 2})
    paths = report.write_outputs(tmp_path, samples, rows, {"overlap": {}})
    doc = json.loads(paths["report"].read_text())
    assert [(r["checkpoint"], r["benchmark"]) for r in doc["results"]] == [
        ("sft.final", "gsm8k"), ("sft.final", "heldout"), ("reasoning_rl.final", "gsm8k"),
        ("reasoning_rl.final", "heldout")]
    for row in doc["results"]:
        assert set(row) >= {"checkpoint", "benchmark", "n", "num_problems", "pass@1", "pass@k", "stderr", "samples"}
        assert row["samples"] == str(paths["samples"])
        pass1, passk = recompute(row["samples"], row)
        assert row["pass@1"] == pytest.approx(pass1, abs=1e-12)
        assert row["pass@k"].keys() == passk.keys() and all(row["pass@k"][k] == pytest.approx(v, abs=1e-12)
                                                            for k, v in passk.items())
        assert row["pass@k"]["1"] == pytest.approx(row["pass@1"])
        assert 0 <= row[f"maj@{row['n']}"] <= 1 and row["sampling"]["seed"] in (1, 2)
    assert 0 < doc["results"][0]["pass@1"] < 1  # a non-trivial pattern


def test_ifeval_rows_report_prompt_and_instruction_levels(tmp_path):
    samples = []
    for p, (strict, loose) in enumerate([({"a": True, "b": False}, {"a": True, "b": True}),
                                         ({"a": True}, {"a": True})]):
        samples.append({"checkpoint": "c", "benchmark": "ifeval", "problem_id": str(p), "sample": 0, "response": "",
                        "extracted": None, "score": float(all(strict.values())), "reason": "", "finished": True,
                        "response_tokens": 3, "instructions": strict, "loose_score": float(all(loose.values())),
                        "instructions_loose": loose})
    info = {"name": "ifeval", "n": 1, "ks": [1], "kind": "ifeval", "domain": "ifeval",
            "sampling": {"temperature": 1.0, "top_p": 1.0, "max_new_tokens": 8, "seed": None}}
    (row,) = report.build_rows(samples, [("c", "/c")], [info], "s.jsonl", {"ifeval": 0})
    assert row["ifeval"] == {"prompt_level_strict": 0.5, "inst_level_strict": pytest.approx(2 / 3),
                             "prompt_level_loose": 1.0, "inst_level_loose": 1.0}
    assert row["pass@1"] == 0.5 and "maj@1" not in row


def test_table_markdown_and_mlflow_names(tmp_path):
    rows = [{"checkpoint": c, "benchmark": b, "n": 4, "num_problems": 10, "pass@1": p, "pass@k": {"1": p, "2": p},
             "stderr": 0.05, "maj@4": p, "truncated": 0.0, "mean_response_tokens": 5.0}
            for c, p in (("sft.final", 0.25), ("reasoning_rl.final", 0.5)) for b in ("heldout", "gsm8k")]
    text = table_text(report.table(rows))
    assert "sft.final" in text and "reasoning_rl.final" in text and "25.0 ± 5.0" in text and "50.0 ± 5.0" in text
    md = report.markdown(rows, {"gsm8k": {"problems": 2, "of": 10, "examples": [{"problem_id": "gsm8k/3",
                                                                                 "training_id": "t1", "score": 1}]}})
    assert "| checkpoint | heldout (n=4, 10) | gsm8k (n=4, 10) |" in md and "gsm8k: 2 of 10 problems overlap" in md
    assert "| sft.final | 25.0 ± 5.0 | 25.0 ± 5.0 |" in md
    assert "| reasoning_rl.final | 50.0 ± 5.0 | 50.0 ± 5.0 |" in md
    doc = report.table(rows)  # a row per checkpoint, a column per benchmark
    assert [r[0] for r in doc.rows] == ["sft.final", "reasoning_rl.final"]
    assert [h for h, _ in doc.columns] == ["checkpoint", "heldout (n=4, 10)", "gsm8k (n=4, 10)"]
    metrics = metrics_for_tracking(rows[:2])
    assert metrics["eval/heldout/pass_at_1"] == 0.25 and metrics["eval/gsm8k/pass_at_2"] == 0.25
    assert "eval/gsm8k/maj_at_4" in metrics and metric_key("eval/my set/pass@1") == "eval/my set/pass_at_1"
    assert report.plot(rows, tmp_path / "p.png").stat().st_size > 0


def test_average_rows_are_the_mean_of_their_benchmarks_with_its_standard_error(tmp_path):
    cells = {("sft.final", "heldout"): (0.4, 0.03), ("sft.final", "heldout_if"): (0.2, 0.04),
             ("general_rl.final", "heldout"): (0.7, 0.03), ("general_rl.final", "heldout_if"): (0.5, 0.04),
             ("general_rl.final", "gsm8k"): (0.0, 0.0), ("sft.final", "gsm8k"): (0.0, 0.0)}
    rows = [{"checkpoint": c, "benchmark": b, "n": 4, "num_problems": 100 if b == "heldout" else 60, "pass@1": p,
             "pass@k": {"1": p}, "stderr": se, "truncated": 0.0, "mean_response_tokens": 5.0}
            for (c, b), (p, se) in cells.items()]
    avg = report.average_rows(rows, {"heldout_mean": ["heldout", "heldout_if"]})
    assert [(r["checkpoint"], r["benchmark"]) for r in avg] == [("sft.final", "heldout_mean"),
                                                               ("general_rl.final", "heldout_mean")]
    # each benchmark counts once (not weighted by its 100 and 60 problems); independent benchmarks' errors add
    assert avg[0]["pass@1"] == pytest.approx(0.3) and avg[1]["pass@1"] == pytest.approx(0.6)
    assert avg[0]["stderr"] == pytest.approx(0.05 / 2) and avg[0]["num_problems"] == 160
    assert avg[0]["average_of"] == ["heldout", "heldout_if"]
    assert report.average_rows(rows, {"x": ["heldout", "missing"]}) == []  # a checkpoint lacking a part: no row
    everything = rows + avg
    doc = report.table(everything)
    assert doc.columns[-1][0] == "heldout_mean (mean of 2)" and doc.rows[1][-1] == "60.0 ± 2.5"
    md = report.markdown(everything)
    assert "| sft.final | 40.0 ± 3.0 | 20.0 ± 4.0 | 0.0 ± 0.0 | 30.0 ± 2.5 |" in md
    assert "| general_rl.final | heldout_mean (mean of heldout, heldout_if) | - | 160 | 0.600 | 0.025 |" in md
    metrics = metrics_for_tracking([r for r in everything if r["checkpoint"] == "sft.final"])
    assert metrics["eval/heldout_mean/pass_at_1"] == pytest.approx(0.3)
    assert metrics["eval/heldout_mean/stderr"] == pytest.approx(0.025)
    assert report.plot(everything, tmp_path / "p.png").stat().st_size > 0
