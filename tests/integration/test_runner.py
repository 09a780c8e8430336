"""The runner end to end through the CLI, with small resumable plugin stages (tests/plugins/toy_stages)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.helpers import PLUGINS, REPO, cli_env, ringctl, ringctl_json, wait_for, write

RECIPE = """
name: toy
seed: 1
stages:
  first:
    kind: toy_stages.counter
    steps: {first_steps}
    sleep: {sleep}
    marker_dir: {markers}
  second:
    kind: toy_stages.counter
    source: first.result
    add: 2
    steps: 3
    marker_dir: {markers}
  side:
    kind: toy_stages.counter
    steps: 2
    marker_dir: {markers}
"""


def recipe(tmp_path: Path, first_steps: int = 3, sleep: float = 0.0) -> Path:
    return write(tmp_path / "toy.yaml", RECIPE.format(first_steps=first_steps, sleep=sleep,
                                                      markers=tmp_path / "markers"))


def executions(tmp_path: Path, stage: str) -> int:
    d = tmp_path / "markers"
    return len(list(d.glob(f"{stage}-*"))) if d.exists() else 0


def client(tmp_path: Path):
    from mlflow.tracking import MlflowClient

    return MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")


def test_run_cache_plan_and_mlflow_contract(tmp_path):
    r = recipe(tmp_path)
    proc, doc = ringctl_json("run", r, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert doc["status"] == "completed"
    assert [s["status"] for s in doc["stages"]] == ["completed"] * 3
    result = json.loads(Path(doc["stages"][1]["outputs"]["result"]).read_text())
    assert result == {"total": 3 + 3 * 2, "steps": 3}

    # MLflow contract: parent + one nested run per stage, tags, params, artifact, metrics
    c = client(tmp_path)
    exp = c.get_experiment_by_name("ringctl")
    parent = c.search_runs([exp.experiment_id], f"tags.`ringctl.run_id` = '{doc['run_id']}'")[0]
    assert parent.data.tags["ringctl.recipe"] == "toy"
    assert parent.data.tags["ringctl.status"] == "completed"
    assert parent.info.status == "FINISHED"
    assert parent.data.params["stages.second.add"] == "2"
    assert "recipe.resolved.yaml" in [a.path for a in c.list_artifacts(parent.info.run_id)]
    children = c.search_runs([exp.experiment_id], f"tags.`mlflow.parentRunId` = '{parent.info.run_id}'")
    tags = {ch.data.tags["ringctl.stage"]: ch.data.tags for ch in children}
    assert set(tags) == {"first", "second", "side"}
    assert all(t["ringctl.status"] == "completed" and t["ringctl.stage_kind"] == "toy_stages.counter"
               and len(t["ringctl.fingerprint"]) == 20 for t in tags.values())
    second = next(ch for ch in children if ch.data.tags["ringctl.stage"] == "second")
    assert [m.value for m in c.get_metric_history(second.info.run_id, "total")] == [5.0, 7.0, 9.0]

    # second run: everything cached, nothing executed again
    t0 = time.perf_counter()
    proc, doc2 = ringctl_json("run", r, cwd=tmp_path)
    elapsed = time.perf_counter() - t0
    assert proc.returncode == 0
    assert [s["status"] for s in doc2["stages"]] == ["cached"] * 3
    assert executions(tmp_path, "first") == 1
    print(f"fully cached run took {elapsed:.2f}s")

    # change one stage: only it and its dependents rerun, and plan says why
    _, plan = ringctl_json("plan", r, "stages.first.steps=4", cwd=tmp_path)
    by = {s["name"]: s for s in plan["stages"]}
    assert by["first"]["would_run"] and "config steps: 3 -> 4" in by["first"]["reason"]
    assert by["second"]["would_run"] and "first" in by["second"]["reason"]
    assert not by["side"]["would_run"] and by["side"]["reason"].startswith("cached")
    assert by["second"]["depends_on"] == ["first"]
    proc, doc3 = ringctl_json("run", r, "stages.first.steps=4", cwd=tmp_path)
    assert [s["status"] for s in doc3["stages"]] == ["completed", "completed", "cached"]
    assert executions(tmp_path, "side") == 1

    mermaid = ringctl("plan", r, "--format", "mermaid", cwd=tmp_path, check=True).stdout
    assert mermaid.startswith("flowchart TD") and "first --> second" in mermaid

    # --rerun: the named stage runs again although cached; its dependents keep their cache (same fingerprint)
    _, plan = ringctl_json("plan", r, "--rerun", "first", cwd=tmp_path)
    by = {s["name"]: (s["would_run"], s["reason"]) for s in plan["stages"]}
    assert by["first"] == (True, "forced with --rerun") and not by["second"][0] and not by["side"][0]
    proc, doc4 = ringctl_json("run", r, "--rerun", "first", cwd=tmp_path)
    assert [s["status"] for s in doc4["stages"]] == ["completed", "cached", "cached"]
    assert executions(tmp_path, "first") == 3 and executions(tmp_path, "second") == 2
    bad = ringctl("run", r, "--rerun", "frist", cwd=tmp_path)
    assert bad.returncode == 2 and "did you mean 'first'" in bad.stderr

    # runs / status
    _, rows = ringctl_json("runs", cwd=tmp_path)
    assert [row["run_id"] for row in rows][0] == doc4["run_id"] and len(rows) == 4
    _, st = ringctl_json("status", doc["run_id"], cwd=tmp_path)
    assert st["status"] == "completed" and {s["name"] for s in st["stages"]} == {"first", "second", "side"}
    assert all(set(s) >= {"name", "kind", "status", "fingerprint", "mlflow_run_id", "outputs"} for s in st["stages"])
    # no run id: the latest run in the workdir, named on stderr
    proc, latest = ringctl_json("status", cwd=tmp_path)
    assert latest["run_id"] == doc4["run_id"] and f"latest run in runs: {doc4['run_id']}" in proc.stderr
    none = ringctl("status", "--workdir", tmp_path / "empty", cwd=tmp_path)
    assert none.returncode == 2 and "no runs in" in none.stderr


def test_failed_stage_exit_1_and_resume_after_fix(tmp_path):
    r = write(tmp_path / "f.yaml", """
        name: failing
        stages:
          ok:
            kind: toy_stages.counter
            steps: 2
          bad:
            kind: toy_stages.counter
            source: ok.result
            steps: 3
            fail_at: 1
    """)
    proc = ringctl("run", r, cwd=tmp_path)
    assert proc.returncode == 1
    assert "ringctl resume failing-" in proc.stderr and "failing on purpose" in proc.stderr
    # the terminal shows the error message; the traceback is in the stage log, whose path is printed
    assert "Traceback" not in proc.stderr and "log (with the traceback):" in proc.stderr
    log = next((tmp_path / "runs").glob("failing-*/bad/stage.log"))
    assert "Traceback" in log.read_text() and "failing on purpose" in (log.parent / "error.txt").read_text()
    _, rows = ringctl_json("runs", cwd=tmp_path)
    assert rows[0]["status"] == "failed"
    # in MLflow the run and the failed stage end FAILED (an interrupted one ends KILLED: test_mlflow_run_status.py)
    state, c = json.loads((log.parents[1] / "state.json").read_text()), client(tmp_path)
    assert c.get_run(state["mlflow_run_id"]).info.status == "FAILED"
    assert {n: c.get_run(s["mlflow_run_id"]).info.status for n, s in state["stages"].items()} == {
        "ok": "FINISHED", "bad": "FAILED"}
    proc, doc = ringctl_json("resume", "no-such-run", cwd=tmp_path)
    assert proc.returncode == 2 and "unknown run id" in doc["error"]


def _state(tmp_path):
    states = list((tmp_path / "runs").glob("*/state.json"))
    return json.loads(states[0].read_text()) if states else None


@pytest.mark.slow
def test_sigkill_process_group_then_resume(tmp_path):
    r = recipe(tmp_path, first_steps=40, sleep=0.1)
    proc = subprocess.Popen([sys.executable, "-m", "ringctl", "run", r], cwd=tmp_path, env=cli_env(),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    # kill the whole process group once the first stage has saved some state mid-stage
    wait_for(lambda: list((tmp_path / "runs").glob("*/first/state/step-*")) and
             (_state(tmp_path) or {}).get("stages", {}).get("first", {}).get("status") == "running",
             "stage first running with a saved state", proc=proc)
    time.sleep(0.5)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    state = _state(tmp_path)
    assert state["stages"]["first"]["status"] == "running" and state["status"] == "running"
    proc, doc = ringctl_json("resume", state["run_id"], cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert doc["status"] == "completed"
    result = json.loads(Path(doc["stages"][1]["outputs"]["result"]).read_text())
    assert result["total"] == 40 + 3 * 2  # same as an uninterrupted run
    assert executions(tmp_path, "first") == 2 and executions(tmp_path, "second") == 1
    # metric history is that of an uninterrupted run (local record rewound to the checkpoint)
    hist = [json.loads(line)["total"] for line in
            (tmp_path / "runs" / state["run_id"] / "first" / "metrics.jsonl").read_text().splitlines()]
    assert hist == [float(i) for i in range(1, 41)]
    # the parent MLflow run ends `completed`
    from mlflow.tracking import MlflowClient

    c = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    parent = c.get_run(state["mlflow_run_id"])
    assert parent.data.tags["ringctl.status"] == "completed" and parent.info.status == "FINISHED"
    # finished stages are not run again by a second resume either
    proc, doc = ringctl_json("resume", state["run_id"], cwd=tmp_path)
    assert proc.returncode == 0 and executions(tmp_path, "first") == 2


@pytest.mark.slow
def test_sigterm_stops_at_step_boundary_exit_130(tmp_path):
    r = recipe(tmp_path, first_steps=50, sleep=0.1)
    shutil.copytree(PLUGINS / "toy_stages", tmp_path / "toy_stages")  # a private copy whose code we edit
    env = {"PYTHONPATH": os.pathsep.join([str(tmp_path), str(REPO)])}
    proc = subprocess.Popen([sys.executable, "-m", "ringctl", "run", r], cwd=tmp_path, env=cli_env(env),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    wait_for(lambda: list((tmp_path / "runs").glob("*/first/state/step-*")), "a saved state of stage first",
             proc=proc)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert "ringctl resume" in err
    state = _state(tmp_path)
    assert state["status"] == "interrupted" and state["stages"]["first"]["status"] == "interrupted"
    # drift: changed stage code is refused on resume unless --allow-drift
    (tmp_path / "toy_stages" / "counter.py").write_text(
        (tmp_path / "toy_stages" / "counter.py").read_text() + "\n# edited after the run started\n")
    proc2, doc = ringctl_json("resume", state["run_id"], cwd=tmp_path, env=env)
    assert proc2.returncode == 2 and "stage code changed: first" in doc["error"]
    proc3, doc = ringctl_json("resume", state["run_id"], "--allow-drift", cwd=tmp_path, env=env)
    assert proc3.returncode == 0 and doc["status"] == "completed"
    assert [s["status"] for s in doc["stages"]] == ["completed"] * 3


def test_resume_refuses_recipe_drift(tmp_path):
    r = recipe(tmp_path, first_steps=3)
    write(tmp_path / "f.yaml", r.read_text().replace("steps: 2\n", "steps: 2\n    fail_at: 0\n"))
    proc = ringctl("run", tmp_path / "f.yaml", cwd=tmp_path)
    assert proc.returncode == 1
    state = _state(tmp_path)
    # edit the recipe file after the run started
    (tmp_path / "f.yaml").write_text((tmp_path / "f.yaml").read_text().replace("add: 2", "add: 5"))
    proc, doc = ringctl_json("resume", state["run_id"], cwd=tmp_path)
    assert proc.returncode == 2
    assert "recipe changed" in doc["error"] and "-    add: 2" in doc["error"] and "+    add: 5" in doc["error"]
    proc = ringctl("resume", state["run_id"], "--allow-drift", cwd=tmp_path)
    assert proc.returncode == 1  # the stored recipe still fails on purpose: resume used it, not the edit


def test_stage_process_that_cannot_start_is_retried_then_fails_resumably(tmp_path, monkeypatch):
    """fork failing with EAGAIN (a process limit, memory pressure) is retried; when starting keeps failing the
    stage is `failed` with the reason in its log (no traceback, no run left `running`) and `resume` runs it."""
    import errno

    from typer.testing import CliRunner

    import ringctl.pipeline.runner as runner_mod
    from ringctl.cli import app

    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(PLUGINS))
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(PLUGINS), str(REPO)]))
    monkeypatch.setattr(runner_mod.time, "sleep", lambda s: None)
    real, failures = subprocess.Popen, {"left": 2}

    def popen(cmd, *a, **kw):
        if "ringctl.pipeline.stage_main" in cmd and failures["left"]:
            failures["left"] -= 1
            raise BlockingIOError(errno.EAGAIN, "Resource temporarily unavailable")
        return real(cmd, *a, **kw)

    monkeypatch.setattr(runner_mod.subprocess, "Popen", popen)
    r = write(tmp_path / "one.yaml", """
        name: one
        stages:
          only:
            kind: toy_stages.counter
            steps: 2
    """)
    res = CliRunner().invoke(app, ["run", str(r), "--json"])
    assert res.exit_code == 0, res.output
    log = next((tmp_path / "runs").glob("one-*/only/stage.log")).read_text()
    assert log.count("could not start the stage process") == 2 and log.count("retrying") == 2

    failures["left"] = 10  # more than the retries: the stage fails, resumable
    res = CliRunner().invoke(app, ["run", str(r), "--rerun", "only", "--json"])
    assert res.exit_code == 1 and "Traceback" not in res.output
    doc = json.loads(res.stdout[res.stdout.index("{"):])
    assert doc["status"] == "failed" and doc["stages"][0]["status"] == "failed"
    failures["left"] = 0
    res = CliRunner().invoke(app, ["resume", doc["run_id"], "--json"])
    assert res.exit_code == 0 and json.loads(res.stdout[res.stdout.index("{"):])["status"] == "completed", res.output


def test_resume_checks_the_inputs_of_the_stages_still_to_run(tmp_path, monkeypatch):
    """`resume` repeats `run`'s input check before anything starts, for the stages still to run only: a dataset
    moved since the run started is one located error (exit 2, nothing launched), a completed stage's input is
    not needed any more, and --skip-input-check lets the stages find their paths themselves."""
    import errno

    from typer.testing import CliRunner

    import ringctl.pipeline.runner as runner_mod
    from ringctl.cli import app

    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(PLUGINS))
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(PLUGINS), str(REPO)]))
    monkeypatch.setattr(runner_mod.time, "sleep", lambda s: None)
    real, launches = subprocess.Popen, {"later": 0}

    def popen(cmd, *a, **kw):  # stage `later` cannot start in the first run: it fails, resumable
        if "ringctl.pipeline.stage_main" in cmd and "later" in cmd:
            launches["later"] += 1
            if launches["later"] <= 4:
                raise BlockingIOError(errno.EAGAIN, "Resource temporarily unavailable")
        return real(cmd, *a, **kw)

    monkeypatch.setattr(runner_mod.subprocess, "Popen", popen)
    first = write(tmp_path / "data" / "a.jsonl", '{"x": 1}\n')
    second = write(tmp_path / "data" / "b.jsonl", '{"x": 2}\n')
    r = write(tmp_path / "inputs.yaml", f"""
        name: inputs
        stages:
          early:
            kind: toy_stages.records
            path: {first}
          later:
            kind: toy_stages.records
            path: {second}
    """)
    res = CliRunner().invoke(app, ["run", str(r), "--json"])
    doc = json.loads(res.stdout[res.stdout.index("{"):])
    assert res.exit_code == 1 and [s["status"] for s in doc["stages"]] == ["completed", "failed"], res.output
    first.unlink()  # early's input: early is done, so this does not matter
    second.rename(tmp_path / "data" / "moved.jsonl")  # later's input: resume must say so before launching
    res = CliRunner().invoke(app, ["resume", doc["run_id"], "--json"])
    err = json.loads(res.stdout[res.stdout.index("{"):])
    assert res.exit_code == 2 and err["valid"] is False, res.output
    assert len(err["errors"]) == 1
    problem = err["errors"][0]
    assert problem["path"] == "stages.later.path" and str(second) in problem["message"]
    assert problem["file"].endswith("recipe.resolved.yaml") and problem["line"] is not None
    assert launches["later"] == 4  # nothing was launched
    res = CliRunner().invoke(app, ["resume", doc["run_id"], "--skip-input-check", "--json"])
    assert res.exit_code == 1 and launches["later"] == 5  # launched: the stage itself finds the file missing
    (tmp_path / "data" / "moved.jsonl").rename(second)
    res = CliRunner().invoke(app, ["resume", doc["run_id"], "--json"])
    assert res.exit_code == 0 and json.loads(res.stdout[res.stdout.index("{"):])["status"] == "completed", res.output
