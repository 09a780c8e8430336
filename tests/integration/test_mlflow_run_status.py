"""What MLflow records for a run that ends other than completed, on a real sqlite store: an interrupted run
(SIGTERM) ends KILLED, the parent run and the stage that was interrupted, online and after `ringctl sync`
of a run that was offline (a failed run ends FAILED: test_runner.py)."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from ringctl.tracking import EXPERIMENT_KIND, EXPERIMENT_KIND_TAG
from tests.helpers import cli_env, free_port, ringctl_json, wait_for, write

RECIPE = """
name: stopped
seed: 1
stages:
  first:
    kind: toy_stages.counter
    steps: 400
    sleep: 0.05
  second:
    kind: toy_stages.counter
    source: first.result
    steps: 2
"""


def _statuses(uri: str, state: dict) -> dict[str, tuple[str, str]]:
    """{"<parent>" or stage name: (MLflow run status, ringctl.status tag)} for every run MLflow holds."""
    from mlflow.tracking import MlflowClient

    c = MlflowClient(uri)
    out = {}
    for name, mlflow_id in [("<parent>", state["mlflow_run_id"])] + [
            (n, s.get("mlflow_run_id")) for n, s in state["stages"].items()]:
        if mlflow_id:
            run = c.get_run(mlflow_id)
            out[name] = (run.info.status, run.data.tags["ringctl.status"])
    return out


def _interrupted_run(tmp_path: Path, tracking_uri: str) -> dict:
    """Start the recipe, SIGTERM it once `first` has saved a checkpoint; the run's state.json after exit 130."""
    r = write(tmp_path / "stopped.yaml", RECIPE)
    proc = subprocess.Popen([sys.executable, "-m", "ringctl", "run", r, "--tracking-uri", tracking_uri],
                            cwd=tmp_path, env=cli_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    wait_for(lambda: list(tmp_path.glob("runs/*/first/state/step-*")), "a saved state of stage first", 300, proc)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err[-3000:]
    (state_file,) = tmp_path.glob("runs/*/state.json")
    state = json.loads(state_file.read_text())
    assert state["status"] == "interrupted" and state["stages"]["first"]["status"] == "interrupted"
    assert state["stages"]["second"]["status"] == "pending"
    return state


def test_interrupted_run_ends_killed_in_mlflow(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    state = _interrupted_run(tmp_path, uri)
    assert _statuses(uri, state) == {"<parent>": ("KILLED", "interrupted"), "first": ("KILLED", "interrupted")}


@pytest.mark.slow
def test_offline_interrupted_run_synced_later_ends_killed(tmp_path):
    state = _interrupted_run(tmp_path, f"http://127.0.0.1:{free_port()}")  # nothing listens there
    assert state["mlflow_run_id"] is None  # offline from the start: MLflow has nothing yet
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    proc, doc = ringctl_json("sync", state["run_id"], "--tracking-uri", uri, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert doc["run_status"] == "interrupted" and doc["runs_created"] == 2
    state = json.loads((tmp_path / "runs" / state["run_id"] / "state.json").read_text())
    assert _statuses(uri, state) == {"<parent>": ("KILLED", "interrupted"), "first": ("KILLED", "interrupted")}
    from mlflow.tracking import MlflowClient

    # sync created the experiment: with the kind tag, as a run does
    assert MlflowClient(uri).get_experiment_by_name("ringctl").tags[EXPERIMENT_KIND_TAG] == EXPERIMENT_KIND
