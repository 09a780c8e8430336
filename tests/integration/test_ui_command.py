"""`ringctl ui`: a real `mlflow ui` on the sqlite store a toy pipeline run wrote, read back through the server's REST
API as a browser reads it; the link that `run` prints and the one `ui` prints agree; Ctrl-C stops the server's whole
process group and frees the port. Bad input (no store, a busy port, an unknown run) exits 2 with one message."""

from __future__ import annotations

import json
import re
import signal
import socket
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest

from ringctl.tracking import EXPERIMENT_KIND, EXPERIMENT_KIND_TAG, UI_RUNS_VIEW
from tests.helpers import cli_env, free_port, ringctl, ringctl_json, wait_for, write

TOY = """
    name: looked-at
    stages:
      a:
        kind: toy_stages.counter
        steps: 2
      b:
        kind: toy_stages.counter
        source: a.result
"""


def _api(base: str, path: str) -> dict:
    with urllib.request.urlopen(f"{base}/api/2.0/mlflow/{path}", timeout=30) as r:
        return json.loads(r.read())


def _port_free(port: int) -> bool:
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _serving_processes(port: int) -> list[str]:
    """Command lines of the processes that serve `port` (the mlflow CLI, uvicorn and its workers)."""
    found = []
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                cmd = (d / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            except OSError:
                continue
            if f"--port {port} " in cmd + " " and ("mlflow" in cmd or "uvicorn" in cmd):
                found.append(cmd)
    return found


class UiProcess:
    """`ringctl ui ARGS` in the background, stdout and stderr in files."""

    def __init__(self, tmp_path: Path, *args: str, name: str = "ui"):
        self.out, self.err = tmp_path / f"{name}.out", tmp_path / f"{name}.err"
        with open(self.out, "w") as out, open(self.err, "w") as err:
            self.proc = subprocess.Popen([sys.executable, "-m", "ringctl", "ui", *args], cwd=tmp_path,
                                         env=cli_env(), stdout=out, stderr=err, text=True)

    def stdout(self) -> str:
        return self.out.read_text()

    def wait_stdout(self, parse, what: str):
        def ready():
            try:
                return parse(self.stdout())
            except ValueError:
                return None

        try:
            return wait_for(ready, what, timeout=240, proc=self.proc, interval=0.2)
        except AssertionError as e:
            raise AssertionError(f"{e}\nstderr:\n{self.err.read_text()[-3000:]}") from None

    def stop(self, sig: int) -> int:
        self.proc.send_signal(sig)
        return self.proc.wait(timeout=60)

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


@pytest.mark.slow
def test_ui_serves_ringctls_experiment_and_stops_on_ctrl_c(tmp_path):
    r = write(tmp_path / "toy.yaml", TOY)
    run = ringctl("run", r, cwd=tmp_path, check=True)
    rid = re.search(r"run (looked-at-\S+) completed", run.stderr).group(1)
    # one line after the summary says how to see the run
    hint = [line for line in run.stderr.splitlines() if "MLflow" in line and "ringctl ui" in line]
    assert len(hint) == 1, run.stderr
    m = re.fullmatch(rf"see it in MLflow: ringctl ui --run {rid} \(serves http://127\.0\.0\.1:5000/#/experiments/"
                     rf"(\w+)/runs/(\w+){re.escape(UI_RUNS_VIEW)}\)", hint[0])
    assert m, hint[0]
    hinted_experiment, hinted_run = m.groups()

    port = free_port()
    ui = UiProcess(tmp_path, "--port", str(port), "--run", rid, "--json")
    try:
        doc = ui.wait_stdout(json.loads, "the JSON document of `ringctl ui --json`")
        base = f"http://127.0.0.1:{port}"
        assert doc["server"] == base and doc["serving"] is True and doc["tracking_uri"] == "sqlite:///mlflow.db"
        assert (doc["experiment_id"], doc["mlflow_run_id"]) == (hinted_experiment, hinted_run)
        assert doc["url"] == f"{base}/#/experiments/{hinted_experiment}/runs/{hinted_run}{UI_RUNS_VIEW}"

        # what the page shows comes from this server: ringctl's experiment, with its kind, and the pipeline run
        exp = _api(base, f"experiments/get?experiment_id={doc['experiment_id']}")["experiment"]
        assert exp["name"] == "ringctl"
        assert {t["key"]: t["value"] for t in exp["tags"]}[EXPERIMENT_KIND_TAG] == EXPERIMENT_KIND
        parent = _api(base, f"runs/get?run_id={doc['mlflow_run_id']}")["run"]
        tags = {t["key"]: t["value"] for t in parent["data"]["tags"]}
        assert tags["ringctl.run_id"] == rid and parent["info"]["status"] == "FINISHED"

        # the same server as a tracking URI: nothing is started, the link points at it
        proc, linked = ringctl_json("ui", "--tracking-uri", base, cwd=tmp_path, timeout=120)
        assert proc.returncode == 0, proc.stderr
        assert linked["url"] == f"{base}/#/experiments/{hinted_experiment}{UI_RUNS_VIEW}"
        assert linked["serving"] is False and linked["mlflow_run_id"] is None
        proc = ringctl("ui", "--tracking-uri", base, "--run", "looked-at-nope", cwd=tmp_path, timeout=120)
        assert proc.returncode == 2 and "no pipeline run looked-at-nope in experiment 'ringctl'" in proc.stderr
        # a second server on the same port is refused before anything starts
        proc = ringctl("ui", "--port", str(port), cwd=tmp_path, timeout=120)
        assert proc.returncode == 2, proc.stderr
        assert f"port {port} on 127.0.0.1 is not free (an MLflow server already answers there)" in proc.stderr

        assert _serving_processes(port)
        assert ui.stop(signal.SIGINT) == 130, ui.err.read_text()[-3000:]
        assert _port_free(port) and _serving_processes(port) == []
        server_log = re.search(r"its output: (\S+)\)", ui.err.read_text()).group(1)
        assert not Path(server_log).exists()  # a clean stop leaves no server log behind
    finally:
        ui.kill()

    # without --json: the link alone on stdout (the experiment's training runs); SIGTERM stops it the same way
    ui = UiProcess(tmp_path, "--port", str(port), name="ui-text")
    try:
        link = ui.wait_stdout(lambda out: out if out.endswith("\n") else None, "the link on stdout")
        assert link == f"http://127.0.0.1:{port}/#/experiments/{hinted_experiment}{UI_RUNS_VIEW}\n"
        assert "Ctrl-C stops it" in ui.err.read_text()
        assert ui.stop(signal.SIGTERM) == 130
        assert _port_free(port) and _serving_processes(port) == []
    finally:
        ui.kill()


def test_ui_without_a_store_exits_2(tmp_path):
    proc = ringctl("ui", cwd=tmp_path)
    assert proc.returncode == 2
    message = " ".join(proc.stderr.split())
    assert (f"no runs here yet: {tmp_path / 'mlflow.db'} does not exist (sqlite:///mlflow.db); run `ringctl run ...` "
            f"first or pass --tracking-uri") in message
    assert not (tmp_path / "mlflow.db").exists()  # nothing created, nothing started
    proc, doc = ringctl_json("ui", "--tracking-uri", f"sqlite:///{tmp_path / 'other.db'}", cwd=tmp_path)
    assert proc.returncode == 2 and doc["status"] == "error" and doc["error"].startswith("no runs here yet")
    env = {"MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'env.db'}"}  # the same resolution as `ringctl run`
    proc = ringctl("ui", cwd=tmp_path, env=env)
    assert proc.returncode == 2 and f"{tmp_path / 'env.db'} does not exist" in " ".join(proc.stderr.split())


def test_ui_refuses_a_tracking_server_that_does_not_answer(tmp_path):
    port = free_port()
    proc = ringctl("ui", "--tracking-uri", f"http://127.0.0.1:{port}", cwd=tmp_path, timeout=120)
    assert proc.returncode == 2
    assert f"the tracking server http://127.0.0.1:{port} does not answer" in " ".join(proc.stderr.split())

