"""Tracking outages against a real `mlflow server` on 127.0.0.1: the server is SIGKILLed mid-run, the run goes on
(offline, what MLflow missed kept in the run directory), `ringctl sync` uploads it once the server is back (and a
second sync changes nothing), SIGTERM during the outage still stops the run promptly, and `resume` syncs."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.helpers import MlflowServer, cli_env, free_port, ringctl_json, wait_for, write

RECIPE = """
name: outage
seed: 1
stages:
  first:
    kind: toy_stages.counter
    steps: {first_steps}
    sleep: {sleep}
  second:
    kind: toy_stages.counter
    source: first.result
    add: 2
    steps: 3
    sleep: {sleep}
  side:
    kind: toy_stages.counter
    steps: 2
"""


@pytest.fixture
def server(tmp_path):
    srv = MlflowServer(tmp_path / "server").start()
    yield srv
    srv.kill()


def _state(work: Path) -> dict | None:
    for p in work.glob("*/state.json"):
        try:
            return json.loads(p.read_text())
        except ValueError:
            return None
    return None


def _stage_status(work: Path, stage: str) -> str | None:
    return (_state(work) or {}).get("stages", {}).get(stage, {}).get("status")


def _start(tmp_path: Path, recipe: Path, server: MlflowServer, *extra: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "ringctl", "run", str(recipe), "--workdir",
                             str(tmp_path / "runs"), "--tracking-uri", server.url, *extra],
                            cwd=tmp_path, env=cli_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)


def _mlflow_view(url: str, run_id: str) -> dict:
    """What MLflow holds for one pipeline run: parent status, and per stage its runs, status and metrics."""
    from mlflow.tracking import MlflowClient

    c = MlflowClient(url)
    exp = c.get_experiment_by_name("ringctl")
    parents = [r for r in c.search_runs([exp.experiment_id], f"tags.`ringctl.run_id` = '{run_id}'")
               if "mlflow.parentRunId" not in r.data.tags]
    assert len(parents) == 1, parents
    parent = parents[0]
    kids = c.search_runs([exp.experiment_id], f"tags.`mlflow.parentRunId` = '{parent.info.run_id}'")
    stages: dict[str, list] = {}
    for k in kids:
        stages.setdefault(k.data.tags["ringctl.stage"], []).append({
            "status": k.data.tags["ringctl.status"], "mlflow_status": k.info.status,
            "total": [(m.step, m.value) for m in c.get_metric_history(k.info.run_id, "total")],
            "toy.total": k.data.tags.get("toy.total"),
            "artifacts": sorted(a.path for a in c.list_artifacts(k.info.run_id))})
    return {"status": parent.data.tags["ringctl.status"], "mlflow_status": parent.info.status,
            "params": len(parent.data.params),
            "artifacts": sorted(a.path for a in c.list_artifacts(parent.info.run_id)), "stages": stages}


@pytest.mark.slow
def test_outage_mid_run_then_sync_twice(tmp_path, server):
    r = write(tmp_path / "outage.yaml", RECIPE.format(first_steps=4, sleep=0.3))
    p = _start(tmp_path, r, server, "--json")
    wait_for(lambda: _stage_status(tmp_path / "runs", "first") == "completed", "stage first completed", proc=p)
    server.kill()  # right after the first stage: its run is still open in MLflow, the rest never reaches it
    t0 = time.time()
    out, err = p.communicate(timeout=240)
    print(f"run finished {time.time() - t0:.1f}s after the tracking server was killed")
    assert p.returncode == 0, err[-3000:]
    doc = json.loads(out)
    assert doc["status"] == "completed" and [s["status"] for s in doc["stages"]] == ["completed"] * 3
    assert doc["tracking"]["offline"] and doc["tracking"]["pending"]
    assert err.count("is unreachable") == 1, err  # the terminal says so once
    run_dir = tmp_path / "runs" / doc["run_id"]
    journal = [json.loads(line) for line in (run_dir / "tracking.pending.jsonl").read_text().splitlines()]
    # the later stages' own tags were kept for sync (the orchestrator was offline when they ran)
    assert {(e["stage"], e["args"].get("key")) for e in journal if e["op"] == "set_tag"} >= {
        ("second", "toy.total"), ("side", "toy.total")}

    server.start()
    proc, synced = ringctl_json("sync", doc["run_id"], "--workdir", tmp_path / "runs", "--tracking-uri", server.url,
                                cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert synced["status"] == "synced" and synced["runs_created"] == 2  # second and side never reached MLflow
    view = _mlflow_view(server.url, doc["run_id"])
    assert view["status"] == "completed" and view["mlflow_status"] == "FINISHED"
    assert "recipe.resolved.yaml" in view["artifacts"] and view["params"] > 5
    assert sorted(view["stages"]) == ["first", "second", "side"]
    by = {n: runs[0] for n, runs in view["stages"].items()}
    assert all(len(runs) == 1 for runs in view["stages"].values())
    assert all(s["status"] == "completed" and s["mlflow_status"] == "FINISHED" for s in by.values())
    assert [v for _, v in by["first"]["total"]] == [1.0, 2.0, 3.0, 4.0]
    assert by["second"]["total"] == [(1, 6.0), (2, 8.0), (3, 10.0)]
    assert by["second"]["toy.total"] == "10" and by["side"]["toy.total"] == "2"
    assert all({"manifest.json", "stage.log"} <= set(s["artifacts"]) for s in by.values())
    assert not (run_dir / "tracking.pending.jsonl").exists() and (run_dir / "tracking.synced.jsonl").exists()

    # idempotent: a second sync creates nothing and logs nothing; MLflow reads exactly the same
    proc, again = ringctl_json("sync", doc["run_id"], "--workdir", tmp_path / "runs", "--tracking-uri", server.url,
                               cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert {k: again[k] for k in ("runs_created", "metrics", "params", "tags", "artifacts")} == dict.fromkeys(
        ("runs_created", "metrics", "params", "tags", "artifacts"), 0)
    assert _mlflow_view(server.url, doc["run_id"]) == view

    # sync with the server gone: exit 1, one clear message, nothing lost locally
    server.kill()
    t0 = time.time()
    proc, failed = ringctl_json("sync", doc["run_id"], "--workdir", tmp_path / "runs", "--tracking-uri", server.url,
                                cwd=tmp_path)
    assert proc.returncode == 1 and "nothing is lost" in failed["error"]
    print(f"sync against a dead server gave up after {time.time() - t0:.1f}s")


@pytest.mark.slow
def test_sigterm_during_outage_stops_promptly_and_resume_syncs(tmp_path, server):
    r = write(tmp_path / "outage.yaml", RECIPE.format(first_steps=400, sleep=0.1))
    p = _start(tmp_path, r, server)
    work = tmp_path / "runs"
    wait_for(lambda: list(work.glob("*/first/state/step-*")), "a saved state of stage first", proc=p)
    server.kill()
    # let the outage be noticed by the stage (its sender fails and goes offline) while it keeps training
    wait_for(lambda: "unreachable" in "".join(x.read_text() for x in work.glob("*/first/stage.log")),
             "stage first to notice the outage (its log says unreachable)", 60, p)
    t0 = time.time()
    p.send_signal(signal.SIGTERM)
    out, err = p.communicate(timeout=120)
    elapsed = time.time() - t0
    print(f"SIGTERM during the outage: the run ended {elapsed:.2f}s later")
    assert p.returncode == 130, err[-3000:]
    assert elapsed < 30  # acceptance asks for 10 s; generous margin for a loaded 2-core machine
    state = _state(work)
    doc = {"run_id": state["run_id"]}
    assert f"ringctl resume {state['run_id']}" in " ".join(err.split()), err[-3000:]
    assert err.count("is unreachable") == 1, err[-3000:]
    assert state["status"] == "interrupted" and state["stages"]["first"]["status"] == "interrupted"

    # resume with the server back: it syncs the outage first, then finishes; MLflow ends complete
    server.start()
    proc, resumed = ringctl_json("resume", doc["run_id"], "--workdir", work, "--tracking-uri", server.url,
                                 cwd=tmp_path, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert resumed["status"] == "completed" and not resumed["tracking"]["offline"]
    view = _mlflow_view(server.url, doc["run_id"])
    assert view["status"] == "completed"
    assert sorted(view["stages"]) == ["first", "second", "side"]
    assert all(len(runs) == 1 and runs[0]["status"] == "completed" for runs in view["stages"].values())
    first = view["stages"]["first"][0]["total"]
    # latest value per step: the history of an uninterrupted run
    latest = {}
    for step, value in first:
        latest[step] = value
    assert sorted(latest.items()) == [(i, float(i)) for i in range(1, 401)]


@pytest.mark.slow
def test_server_unreachable_from_the_start(tmp_path):
    r = write(tmp_path / "outage.yaml", RECIPE.format(first_steps=2, sleep=0.0))
    dead = f"http://127.0.0.1:{free_port()}"
    t0 = time.time()
    proc, doc = ringctl_json("run", r, "--workdir", tmp_path / "runs", "--tracking-uri", dead, cwd=tmp_path)
    print(f"run with no tracking server took {time.time() - t0:.1f}s")
    assert proc.returncode == 0, proc.stderr
    assert doc["status"] == "completed" and doc["tracking"]["offline"]
    assert proc.stderr.count("is unreachable") == 1


@pytest.mark.slow
def test_server_back_before_the_run_ends_syncs_at_the_end(tmp_path, server):
    r = write(tmp_path / "outage.yaml", RECIPE.format(first_steps=3, sleep=0.3).replace(
        "add: 2\n    steps: 3", "add: 2\n    steps: 80"))  # `second` runs for about 25 s
    p = _start(tmp_path, r, server, "--json")
    wait_for(lambda: _stage_status(tmp_path / "runs", "first") == "completed", "stage first completed", proc=p)
    server.kill()
    wait_for(lambda: _stage_status(tmp_path / "runs", "second") == "running", "stage second running", proc=p)
    server.start()  # back while `second` runs: the run stays offline, and syncs once it has finished
    out, err = p.communicate(timeout=600)
    assert p.returncode == 0, err[-3000:]
    doc = json.loads(out)
    assert doc["tracking"]["offline"] and doc["tracking"]["synced"] and doc["tracking"]["pending"] is None
    assert "answers again" in err
    view = _mlflow_view(server.url, doc["run_id"])
    assert view["status"] == "completed" and sorted(view["stages"]) == ["first", "second", "side"]
    assert all(len(runs) == 1 and runs[0]["status"] == "completed" for runs in view["stages"].values())
    assert [v for _, v in view["stages"]["second"][0]["total"]] == [3.0 + 2 * i for i in range(1, 81)]
