"""The tracking contract against a real `mlflow server` started on 127.0.0.1 (not just the sqlite file)."""

from __future__ import annotations

import pytest

from tests.helpers import MlflowServer, ringctl_json, write


@pytest.fixture
def mlflow_server(tmp_path):
    server = MlflowServer(tmp_path / "server").start()
    yield server.url
    server.kill()


@pytest.mark.slow
def test_run_against_mlflow_server(tmp_path, mlflow_server):
    r = write(tmp_path / "toy.yaml", """
        name: served
        stages:
          a:
            kind: toy_stages.counter
            steps: 2
          b:
            kind: toy_stages.counter
            source: a.result
    """)
    proc, doc = ringctl_json("run", r, "--tracking-uri", mlflow_server, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert not (tmp_path / "mlflow.db").exists()  # nothing went to the default store
    from mlflow.tracking import MlflowClient

    c = MlflowClient(mlflow_server)
    exp = c.get_experiment_by_name("ringctl")
    (parent,) = c.search_runs([exp.experiment_id], f"tags.`ringctl.run_id` = '{doc['run_id']}'")
    assert parent.data.tags["ringctl.status"] == "completed"
    children = c.search_runs([exp.experiment_id], f"tags.`mlflow.parentRunId` = '{parent.info.run_id}'")
    assert sorted(ch.data.tags["ringctl.stage"] for ch in children) == ["a", "b"]
    b = next(ch for ch in children if ch.data.tags["ringctl.stage"] == "b")
    assert [m.value for m in c.get_metric_history(b.info.run_id, "total")] == [3.0, 4.0, 5.0, 6.0, 7.0]
    assert "manifest.json" in [a.path for a in c.list_artifacts(b.info.run_id)]
    # MLFLOW_TRACKING_URI is honoured too, and `runs` reads the server
    proc, rows = ringctl_json("runs", cwd=tmp_path, env={"MLFLOW_TRACKING_URI": mlflow_server})
    assert rows[0]["run_id"] == doc["run_id"] and rows[0]["status"] == "completed"
