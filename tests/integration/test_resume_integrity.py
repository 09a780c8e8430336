"""Kills at the narrow moments of a stage's commit (armed through `ringctl.chaos`), and torn outputs: a finished
stage is never run again, an output whose sha256 no longer matches its manifest is redone, never trusted."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from tests.helpers import cli_env, ringctl_json, write

RECIPE = """
name: integrity
seed: 1
stages:
  first:
    kind: toy_stages.counter
    steps: 3
  second:
    kind: toy_stages.counter
    source: first.result
    add: 2
    steps: 3
  side:
    kind: toy_stages.counter
    steps: 2
"""


def _launches(run_dir: Path, stage: str) -> int:
    return (run_dir / stage / "stage.log").read_text().count(" launching: ")


def _killed_run(tmp_path: Path, point: str, stage: str) -> tuple[Path, dict]:
    r = write(tmp_path / "integrity.yaml", RECIPE)
    arm = tmp_path / "arm.json"
    arm.write_text(json.dumps({"id": 1, "point": point, "stage": stage, "nth": 1}))
    env = cli_env({"RINGCTL_CHAOS_FILE": str(arm)})
    # a session of its own: the kill point SIGKILLs its whole process group (never pytest's)
    proc = subprocess.run([sys.executable, "-m", "ringctl", "run", str(r), "--run-id", "r1"], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=600, start_new_session=True)
    assert proc.returncode == -9, proc.stderr  # the orchestrator died with the stage at the point
    run_dir = tmp_path / "runs" / "r1"
    return run_dir, json.loads((run_dir / "state.json").read_text())


def test_kill_after_stage_returned_writes_manifest_without_rerun(tmp_path):
    run_dir, state = _killed_run(tmp_path, "stage-returned", "first")
    assert state["stages"]["first"]["status"] == "running" and not (run_dir / "first" / "manifest.json").exists()
    proc, doc = ringctl_json("resume", "r1", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert [s["status"] for s in doc["stages"]] == ["completed"] * 3
    # the stage process started again only to write its manifest; run() was not called again
    log = (run_dir / "first" / "stage.log").read_text()
    assert "had returned its outputs" in log
    assert json.loads(Path(doc["stages"][1]["outputs"]["result"]).read_text())["total"] == 3 + 6
    assert [json.loads(x)["total"] for x in (run_dir / "first" / "metrics.jsonl").read_text().splitlines()] == [1, 2, 3]


def test_finished_stage_adopted_and_torn_output_redone(tmp_path):
    # killed after `second` exited (manifest written) but before the run's state said so
    run_dir, state = _killed_run(tmp_path, "stage-exited", "second")
    assert state["stages"]["first"]["status"] == "completed" and state["stages"]["second"]["status"] == "running"
    # a torn write in a finished stage's output: same size, modification time put back (only sha256 can tell)
    out = run_dir / "first" / "outputs" / "result.json"
    st = out.stat()
    out.write_text(out.read_text().replace('"total": 3', '"total": 7'))
    os.utime(out, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert out.stat().st_size == st.st_size
    proc, doc = ringctl_json("resume", "r1", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "first: its outputs are not intact" in proc.stderr and "sha256 mismatch" in proc.stderr
    assert [s["status"] for s in doc["stages"]] == ["completed"] * 3
    assert json.loads(out.read_text())["total"] == 3  # redone
    assert _launches(run_dir, "first") == 1  # its directory was removed and the stage ran from scratch once more
    assert _launches(run_dir, "second") == 1  # finished: adopted, not launched again
    assert "not run again" in (run_dir / "second" / "stage.log").read_text()
    assert [json.loads(x)["total"] for x in (run_dir / "first" / "metrics.jsonl").read_text().splitlines()] == [1, 2, 3]

    # a new run of the recipe: an output edited in place (mtime changed) is not taken from the cache
    result = run_dir / "side" / "outputs" / "result.json"
    result.write_text(result.read_text().replace('"total": 2', '"total": 5'))
    _, plan = ringctl_json("plan", tmp_path / "integrity.yaml", cwd=tmp_path)
    by = {s["name"]: s for s in plan["stages"]}
    assert not by["first"]["would_run"] and by["side"]["would_run"]
    assert by["side"]["reason"] == "outputs of the last run are missing or modified"
