"""recipes/tiny.yaml end to end, exactly as `make demo` runs it: every stage, SFT loss down, held-out accuracy
up after reasoning RL by a margin stated in standard errors (never a pinned float trajectory: float results differ
between processor types), the selection command as a user types it, the reward model's held-out accuracy, general RL
raising instruction following without losing reasoning, the evaluate stage's table (every figure recomputed from
samples.jsonl, `ringctl eval --run`; the last checkpoint above every SFT epoch and the selected checkpoint by a
standard error), and a SIGKILL of the whole run mid general RL followed by `ringctl resume`
reproducing the uninterrupted metrics exactly (same machine)."""

from __future__ import annotations

import json
import math
import os
import signal
import statistics
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from ringctl.train.config import TinyModelConfig
from tests.conftest import REPO
from tests.helpers import cli_env, ringctl, ringctl_json, untrained_loss, wait_for

TINY = REPO / "recipes" / "tiny.yaml"
RECIPE = yaml.safe_load(TINY.read_text())
RL = RECIPE["stages"]["reasoning_rl"]
GENERAL = RECIPE["stages"]["general_rl"]
EVAL = RECIPE["stages"]["evaluate"]
# The learning claim of issue 10: held-out accuracy after RL exceeds the one before by at least this much
# (absolute) AND by at least MIN_STDERRS standard errors of the difference.
MIN_HELDOUT_GAIN = 0.1
MIN_STDERRS = 3.0


def _metrics(run_dir: Path, stage: str) -> list[dict]:
    return [json.loads(line) for line in (run_dir / stage / "metrics.jsonl").read_text().splitlines()]


def check_general_rl(run_dir: Path) -> None:
    """The reward model separates held-out pairs; general RL raises its training reward and the held-out
    instruction-following reward, and held-out reasoning does not fall by more than 3 standard errors."""
    from transformers import AutoModelForSequenceClassification

    rm_report = json.loads((run_dir / "rm" / "outputs" / "report.json").read_text())
    assert rm_report["heldout_accuracy"] >= 0.7, rm_report
    AutoModelForSequenceClassification.from_pretrained(run_dir / "rm" / "outputs" / "model")
    rows = _metrics(run_dir, "general_rl")
    steps = [r for r in rows if "reward/mean" in r]
    assert len(steps) == GENERAL["steps"]
    first, last = [r["reward/mean"] for r in steps[:10]], [r["reward/mean"] for r in steps[-10:]]
    assert statistics.fmean(last) > statistics.fmean(first), (first, last)
    # per-source keys are logged on the steps whose prompts include that source (a step of 16 prompts drawn from the
    # general and reasoning prompts may hold no open-ended one): look over all the steps, not the last one
    logged = set().union(*steps)
    assert {"reward/verifier/mean", "reward/reward_model/mean", "reward/reward_model/length_corr"} <= logged
    evals = [r for r in rows if "eval/reward/ifeval" in r]
    assert evals[0]["step"] == 0 and evals[-1]["step"] == GENERAL["steps"]
    start, end = evals[0], evals[-1]
    assert end["eval/reward/ifeval"] > start["eval/reward/ifeval"], evals
    noise = math.hypot(start["eval/reward_stderr/arithmetic"], end["eval/reward_stderr/arithmetic"])
    assert end["eval/reward/arithmetic"] >= start["eval/reward/arithmetic"] - 3 * noise, evals


def _final_rl_metrics(run_dir: Path, stage: str = "reasoning_rl") -> list[dict]:
    timing = ("time/", "throughput/")
    return [{k: v for k, v in r.items() if not k.startswith(timing)} for r in _metrics(run_dir, stage)]


def heldout_gain(rl_metrics: list[dict]) -> tuple[float, float, list]:
    """(gain, its standard error, [(step, accuracy, stderr)]) from the RL stage's held-out evaluations."""
    held = [(r["step"], r["eval/reward"], r["eval/reward_stderr"]) for r in rl_metrics if "eval/reward" in r]
    (_, before, se0), (_, after, se1) = held[0], held[-1]
    return after - before, math.hypot(se0, se1), held


def assert_learns(rl_metrics: list[dict]) -> None:
    gain, se, held = heldout_gain(rl_metrics)
    assert held[0][0] == 0 and held[-1][0] == RL["steps"], held
    assert gain >= MIN_HELDOUT_GAIN and gain >= MIN_STDERRS * se, (gain, se, held)
    # training reward on fresh prompts: the second half of the steps above the first half by 3 standard errors of
    # the difference. Halves, not the first and last 10 steps: a step's mean reward over 16 prompts swings by about
    # 0.07 with the prompts drawn, so 10 steps a side measured 2.5-6.8 standard errors over five runs of this recipe
    # (one CI run failed at 2.5), halves 4.7-7.1.
    rewards = [r["reward/mean"] for r in rl_metrics if "train/tokens" in r]
    half = len(rewards) // 2
    first, last = rewards[:half], rewards[-half:]
    diff_se = math.hypot(statistics.stdev(first), statistics.stdev(last)) / math.sqrt(half)
    assert statistics.fmean(last) - statistics.fmean(first) >= MIN_STDERRS * diff_se, (first, last)


def _pass_at_k(n: int, c: int, k: int) -> float:
    return 1.0 - math.comb(n - c, k) / math.comb(n, k)


def check_evaluation(doc: dict, work: Path, cwd: Path) -> None:
    """The evaluate stage: SFT, selected and RL checkpoints x held-out / GSM8K / MATH-500; every pass@1 and pass@k
    of report.json equals what samples.jsonl gives; RL beats the selected checkpoint on the held-out tasks by at
    least one standard error of the difference (the learning claim proper, in standard errors on the RL stage's own
    held-out prompts, is assert_learns); `ringctl eval --run` prints the same rows and the table."""
    ev = EVAL
    report = json.loads(Path(next(s for s in doc["stages"] if s["name"] == "evaluate")["outputs"]["report"]).read_text())
    rows = report["results"]
    # sft.checkpoints stands for each SFT epoch: the table shows every checkpoint the pipeline produced
    assert ev["checkpoints"][0] == "sft.checkpoints"
    labels = [f"sft.checkpoints/epoch-{e}" for e in range(1, RECIPE["stages"]["sft"]["epochs"] + 1)]
    labels += ev["checkpoints"][1:]
    averages = ev["averages"]  # {heldout_mean: [heldout, heldout_if]}: rows after the benchmarks' rows
    assert [(r["checkpoint"], r["benchmark"]) for r in rows] == [
        *((c, b["name"]) for c in labels for b in ev["benchmarks"]), *((c, a) for c in labels for a in averages)]
    cell = {(r["checkpoint"], r["benchmark"]): r for r in rows}
    for c in labels:
        for name, parts in averages.items():
            assert cell[c, name]["pass@1"] == pytest.approx(statistics.fmean(cell[c, b]["pass@1"] for b in parts))
    samples = [json.loads(line) for line in Path(rows[0]["samples"]).read_text().splitlines()]
    for r in (r for r in rows if "average_of" not in r):
        bench = next(b for b in ev["benchmarks"] if b["name"] == r["benchmark"])
        per: dict[str, list[float]] = {}
        for s in samples:
            if (s["checkpoint"], s["benchmark"]) == (r["checkpoint"], r["benchmark"]):
                per.setdefault(s["problem_id"], []).append(s["score"])
        n = bench["n"]
        assert r["n"] == n and r["num_problems"] == len(per) <= bench["limit"]
        assert all(len(v) == n for v in per.values())
        assert r["pass@1"] == pytest.approx(sum(sum(v) / n for v in per.values()) / len(per), abs=1e-12)
        for k, v in r["pass@k"].items():
            want = sum(_pass_at_k(n, int(sum(x)), int(k)) for x in per.values()) / len(per)
            assert v == pytest.approx(want, abs=1e-12)
    assert report["overlap"]["gsm8k"]["problems"] == 0 and report["overlap"]["math500"]["problems"] == 0
    assert "heldout" not in report["overlap"]  # exact-deduplicated against the training prompts instead
    held = {r["checkpoint"]: r for r in rows if r["benchmark"] == "heldout"}
    before, after = held["select.checkpoint"], held["reasoning_rl.final"]
    assert after["pass@1"] - before["pass@1"] >= math.hypot(before["stderr"], after["stderr"]) > 0, held
    # the pipeline's product above every checkpoint it produced (issue 24). The SFT traces come from an imperfect
    # teacher, so SFT alone plateaus near the teacher and verifiable-reward RL sharpens past it: on held-out reasoning,
    # above every SFT epoch; general RL holds reasoning and adds instruction following: on the mean over both held-out
    # benchmarks, above every other row, reasoning RL's included. One standard error of the difference here, on one
    # seed and any processor; the README's 3-seed table (bench/tiny_learning.py, `make test-multiseed`) states the
    # margins in standard errors.
    def above(final, other):
        return final["pass@1"] - other["pass@1"] >= math.hypot(final["stderr"], other["stderr"])

    for name in labels[:-2]:  # every SFT epoch and the selected one
        assert above(held[labels[-1]], held[name]), held
    mean = {c: cell[c, "heldout_mean"] for c in labels}
    assert all(above(mean[labels[-1]], mean[name]) for name in labels[:-1]), mean
    proc, again = ringctl_json("eval", "--run", doc["run_id"], "--workdir", work, cwd=cwd)
    assert proc.returncode == 0 and again["results"] == rows, proc.stderr
    table = ringctl("eval", "--run", doc["run_id"], "--workdir", work, cwd=cwd)
    assert table.returncode == 0 and "reasoning_rl.final" in table.stdout and "heldout (n=4" in table.stdout


@pytest.mark.slow
@pytest.mark.timeout(1800)  # a full run, then a second run killed in RL and resumed
def test_tiny_pipeline_learns_selects_and_resumes_after_a_kill(tmp_path, benchmarks):
    work = tmp_path / "runs"
    proc, doc = ringctl_json("run", TINY, "--workdir", work, cwd=tmp_path, timeout=1200,
                             env={"RINGCTL_BENCHMARKS_DIR": str(benchmarks)})
    assert proc.returncode == 0, proc.stderr[-4000:]
    names = [s["name"] for s in doc["stages"]]
    assert sorted(names) == sorted(RECIPE["stages"]) and names[-1] == "evaluate", names
    assert all(s["status"] == "completed" for s in doc["stages"])
    run_a = work / doc["run_id"]

    # SFT: the loss falls from the untrained model's (about ln(vocab), tests.helpers.untrained_loss)
    losses = [r["train/loss"] for r in _metrics(run_a, "sft") if "train/loss" in r]
    expected, tolerance = untrained_loss(TinyModelConfig(**RECIPE["model"]["tiny"]))
    assert losses[0] == pytest.approx(expected, abs=tolerance) and statistics.fmean(losses[-20:]) < 0.1 * losses[0]
    # RL: exactly phi tokens in every step's loss; held-out accuracy and training reward up, in standard errors
    rl = _final_rl_metrics(run_a)
    steps = [r for r in rl if "train/tokens" in r]
    assert len(steps) == RL["steps"] and {r["train/tokens"] for r in steps} == {float(RL["token_budget"])}
    assert_learns(rl)

    # select-sft as a user types it right after `make demo` (no --run: the latest run with SFT checkpoints), then
    # with --run: --json with every candidate's fields and the choice; the table; a re-ranking by accuracy
    table = ringctl("select-sft", "--metric", "token-efficiency", "--workdir", work, cwd=tmp_path)
    assert table.returncode == 0 and "selected" in table.stdout and doc["run_id"] in table.stderr, table.stderr
    proc, sel = ringctl_json("select-sft", "--metric", "token-efficiency", "--run", doc["run_id"],
                             "--workdir", work, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert sel["metric"] == "token-efficiency" and len(sel["candidates"]) == RECIPE["stages"]["sft"]["epochs"]
    assert sel["selected"] in {c["checkpoint"] for c in sel["candidates"]}
    assert all(set(c) >= {"checkpoint", "epoch", "sft_tokens", "entropy", "accuracy", "token_efficiency",
                          "reward_gain"} for c in sel["candidates"])
    assert [c["sft_tokens"] for c in sel["candidates"]] == sorted(c["sft_tokens"] for c in sel["candidates"])
    select_out = next(s for s in doc["stages"] if s["name"] == "select")["outputs"]["checkpoint"]
    assert Path(select_out).resolve() == Path(sel["selected"]).resolve()
    table = ringctl("select-sft", "--run", doc["run_id"], "--workdir", work, cwd=tmp_path)
    assert table.returncode == 0 and "selected" in table.stdout
    proc, by_acc = ringctl_json("select-sft", "--metric", "accuracy", "--run", doc["run_id"],
                                "--workdir", work, cwd=tmp_path)
    best = max(by_acc["candidates"], key=lambda c: (c["accuracy"], -c["sft_tokens"]))
    assert by_acc["selected"] == best["checkpoint"]

    check_general_rl(run_a)
    check_evaluation(doc, work, tmp_path)

    # the same recipe again with --rerun general_rl: everything else comes from the cache, general RL (reward model
    # included) runs again; kill the whole process group once it has saved its second state, resume, and compare
    # with the uninterrupted run (killed and resumed reasoning RL: tests/integration/test_rl_stage.py, test_chaos_resume.py)
    p = subprocess.Popen([sys.executable, "-m", "ringctl", "run", str(TINY), "--rerun", "general_rl",
                          "--workdir", str(work)], cwd=tmp_path, env=cli_env(), stdout=subprocess.DEVNULL,
                         stderr=subprocess.DEVNULL, start_new_session=True)
    kill_at = GENERAL["save_every"] * 2
    killed_state = wait_for(lambda: next((d for d in work.glob(f"*/general_rl/state/step-{kill_at:06d}")
                                          if run_a not in d.parents), None),
                            f"general RL's step-{kill_at} state in the second run", 1200, p, interval=0.2)
    os.killpg(p.pid, signal.SIGKILL)
    p.wait()
    run_b = killed_state.parents[2]
    assert not (run_b / "general_rl" / "outputs" / "checkpoints" / f"step-{GENERAL['steps']:06d}").exists()
    proc, resumed = ringctl_json("resume", run_b.name, "--workdir", work, cwd=tmp_path, timeout=1200)
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert resumed["status"] == "completed"
    # evaluate's fingerprint hashes general RL's (unchanged), so its outputs come from the first run's cache
    assert {s["name"]: s["status"] for s in resumed["stages"]} == {n: "completed" if n == "general_rl" else "cached"
                                                                   for n in names}
    log = (run_b / "general_rl" / "stage.log").read_text()
    assert log.count("launching:") == 2 and f"[rl] resumed at step {kill_at}/{GENERAL['steps']}" in log
    assert _final_rl_metrics(run_b, "general_rl") == _final_rl_metrics(run_a, "general_rl")


@pytest.mark.slow
@pytest.mark.multiseed
def test_tiny_pipeline_learns_for_three_seeds():
    """The README's table: bench/tiny_learning.py over 3 seeds (the recipe's and two it was not tuned on); each seed's
    held-out gain passes the same statistical bar, and the evaluation's last checkpoint is its best held-out row, at
    least 3 standard errors above every SFT epoch. Opt-in (`make test-multiseed`): three whole pipelines."""
    proc = subprocess.run([sys.executable, str(REPO / "bench" / "tiny_learning.py"), "--seeds", "1234,7,99", "--json"],
                          capture_output=True, text=True, env=cli_env(), timeout=3600)
    assert proc.returncode == 0, proc.stderr[-4000:]
    result = json.loads(proc.stdout.splitlines()[-1])
    for row in result["seeds"]:
        assert row["gain"] >= MIN_HELDOUT_GAIN and row["gain"] >= MIN_STDERRS * row["gain_stderr"], row
        # the evaluate stage's held-out rows (issue 24): on the mean over held-out reasoning and instruction following,
        # the last checkpoint >= 3 SE above every other one; on held-out reasoning alone >= 3 SE above every SFT epoch
        # (there general RL holds what reasoning RL reached, within noise: the README's table)
        assert row["claim_benchmark"] == "heldout_mean", row
        assert row["final_margin_in_stderr"] >= MIN_STDERRS and row["final_over_sft_in_stderr"] >= MIN_STDERRS, row
        assert row["evaluations"]["heldout"]["final_over_sft_in_stderr"] >= MIN_STDERRS, row
