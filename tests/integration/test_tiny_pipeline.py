"""recipes/tiny.yaml end to end (shrunk by overrides to keep the suite short): the four stages, the selection
command, and a SIGKILL of the whole run + `ringctl resume` reproducing the uninterrupted final metrics."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import REPO
from tests.helpers import cli_env, ringctl, ringctl_json

TINY = REPO / "recipes" / "tiny.yaml"
SHRINK = ["stages.filter.sources.0.n=600", "stages.sft.epochs=3", "stages.select.num_prompts=8",
          "stages.select.probe_steps=1", "stages.reasoning_rl.steps=6", "stages.reasoning_rl.save_every=2",
          "stages.reasoning_rl.eval_every=3", "stages.reasoning_rl.eval_prompts_count=8"]


def _final_rl_metrics(run_dir: Path) -> list[dict]:
    rows = [json.loads(line) for line in (run_dir / "reasoning_rl" / "metrics.jsonl").read_text().splitlines()]
    timing = ("time/", "throughput/")
    return [{k: v for k, v in r.items() if not k.startswith(timing)} for r in rows]


@pytest.mark.slow
def test_tiny_pipeline_select_and_kill_resume(tmp_path):
    proc, doc = ringctl_json("run", TINY, *SHRINK, "--workdir", tmp_path / "a", cwd=tmp_path, timeout=1200)
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert [s["name"] for s in doc["stages"]] == ["filter", "sft", "select", "reasoning_rl"]
    assert all(s["status"] == "completed" for s in doc["stages"])
    run_a = tmp_path / "a" / doc["run_id"]

    # SFT loss falls; selection names one of the epoch checkpoints; RL trained exactly phi tokens per step
    sft_rows = [json.loads(x) for x in (run_a / "sft" / "metrics.jsonl").read_text().splitlines()]
    losses = [r["train/loss"] for r in sft_rows if "train/loss" in r]
    assert losses[-1] < 0.2 * losses[0]
    rl_rows = [r for r in _final_rl_metrics(run_a) if "train/tokens" in r]
    assert {r["train/tokens"] for r in rl_rows} == {1536.0}

    proc, sel = ringctl_json("select-sft", "--metric", "token-efficiency", "--run", doc["run_id"],
                             "--workdir", tmp_path / "a", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert sel["metric"] == "token-efficiency" and len(sel["candidates"]) == 3
    assert sel["selected"] in {c["checkpoint"] for c in sel["candidates"]}
    assert all(set(c) >= {"checkpoint", "epoch", "sft_tokens", "entropy", "accuracy", "token_efficiency",
                          "reward_gain"} for c in sel["candidates"])
    select_out = next(s for s in doc["stages"] if s["name"] == "select")["outputs"]["checkpoint"]
    assert Path(select_out).resolve() == Path(sel["selected"]).resolve()
    table = ringctl("select-sft", "--run", doc["run_id"], "--workdir", tmp_path / "a", cwd=tmp_path)
    assert table.returncode == 0 and "selected" in table.stdout
    proc, by_acc = ringctl_json("select-sft", "--metric", "accuracy", "--run", doc["run_id"],
                                "--workdir", tmp_path / "a", cwd=tmp_path)
    best = max(by_acc["candidates"], key=lambda c: (c["accuracy"], -c["sft_tokens"]))
    assert by_acc["selected"] == best["checkpoint"]

    # kill the whole run while reasoning RL is mid-way, resume, and compare with the uninterrupted run
    p = subprocess.Popen([sys.executable, "-m", "ringctl", "run", str(TINY), *SHRINK, "--workdir",
                          str(tmp_path / "b")], cwd=tmp_path, env=cli_env(), stdout=subprocess.DEVNULL,
                         stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.time() + 1200
    while time.time() < deadline and not list((tmp_path / "b").glob("*/reasoning_rl/state/step-000002")):
        time.sleep(0.2)
    os.killpg(p.pid, signal.SIGKILL)
    p.wait()
    (run_b,) = [d for d in (tmp_path / "b").iterdir() if d.is_dir() and not d.name.startswith(".")]
    proc, resumed = ringctl_json("resume", run_b.name, "--workdir", tmp_path / "b", cwd=tmp_path, timeout=1200)
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert resumed["status"] == "completed"
    # finished stages were not run again: one launch each in their logs
    for stage in ("filter", "sft", "select"):
        assert (run_b / stage / "stage.log").read_text().count("launching:") == 1
    assert _final_rl_metrics(run_b) == _final_rl_metrics(run_a)
