"""`ringctl ui`: a real `mlflow ui` on ringctl's tracking store, and the link that opens ringctl's experiment on
its training runs (or one pipeline run's page).

MLflow 3.17's UI opens an experiment in its GenAI view (traces) unless the link carries
`?workflowType=machine_learning` (ringctl.tracking.UI_RUNS_VIEW); bench/mlflow_ui_screenshot.py photographs both.
The server is `python -m mlflow ui` of this interpreter, in its own process group, so that a stop reaches its workers
too; the experiment and the run are read through its REST API, as the browser reads them (no mlflow import here).
With a tracking server as the tracking URI nothing is started: the link points at that server's own UI.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from ringctl.errors import EXIT_INTERRUPTED, BadInput, RingctlError
from ringctl.tracking import is_server_uri, sqlite_path, ui_link

HEALTH_TIMEOUT_S = 180.0  # `mlflow ui` imports mlflow and opens the store: 10-20 s on a busy 2-core machine
STOP_WAIT_S = 15.0        # after the forwarded signal, before SIGKILL
WILDCARD_HOSTS = ("0.0.0.0", "::", "")


@dataclass(frozen=True)
class Link:
    url: str
    experiment_id: str
    mlflow_run_id: str | None
    server: str      # the UI's base URL
    serving: bool    # True: this command runs the server until stopped


def base_url(host: str, port: int) -> str:
    """The address a browser on this machine uses for a server bound to `host`:`port`."""
    host = "127.0.0.1" if host in WILDCARD_HOSTS else host
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def _api(base: str, path: str, body: dict | None = None, timeout: float = 30.0) -> dict:
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(f"{base}/api/2.0/mlflow/{path}", data=data,
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=timeout) as r:
        return json.loads(r.read() or b"{}")


def answers_health(base: str) -> bool:
    try:
        with urllib.request.urlopen(f"{base}/health", timeout=2) as r:
            return r.status == 200
    except OSError:
        return False


def find_link(base: str, uri: str, experiment: str, run_id: str | None, serving: bool) -> Link:
    """The experiment's (or the pipeline run's) page on the UI at `base`; BadInput naming what the store lacks."""
    import urllib.error

    try:
        exp = _api(base, "experiments/get-by-name?" + urllib.parse.urlencode({"experiment_name": experiment}))
    except urllib.error.HTTPError as e:
        if e.code != 404:
            raise RingctlError(f"MLflow at {base} answered {e.code} for experiment {experiment!r}: "
                               f"{e.read()[:300].decode('utf-8', 'replace')}") from None
        names = [x["name"] for x in _api(base, "experiments/search", {"max_results": 50}).get("experiments", [])]
        raise BadInput(f"no experiment {experiment!r} in {uri} (experiments there: {', '.join(names) or 'none'}); "
                       f"run `ringctl run ...` first, or pass --experiment NAME (the recipe's tracking.experiment)"
                       ) from None
    eid = exp["experiment"]["experiment_id"]
    mlflow_run_id = None
    if run_id:
        if "'" in run_id or "\\" in run_id:
            raise BadInput(f"--run {run_id!r}: not a run id (see `ringctl runs`)")
        found = _api(base, "runs/search", {"experiment_ids": [eid], "max_results": 1,
                                           "filter": f"tags.`ringctl.run_id` = '{run_id}'"}).get("runs", [])
        if not found:
            raise BadInput(f"no pipeline run {run_id} in experiment {experiment!r} of {uri}; `ringctl runs` lists "
                           f"them (a run that went offline is there after `ringctl sync {run_id}`)")
        mlflow_run_id = found[0]["info"]["run_id"]
    return Link(ui_link(base, eid, mlflow_run_id), eid, mlflow_run_id, base, serving)


def check_port(host: str, port: int) -> None:
    """BadInput when nothing can listen on host:port here (in use, or not an address of this machine)."""
    try:
        infos = socket.getaddrinfo(host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as e:
        raise BadInput(f"--host {host}: not an address this machine can listen on ({e.strerror})") from None
    family, _, _, _, addr = infos[0]
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the server does: a closing port is free
        try:
            s.bind(addr)
        except OSError as e:
            base = base_url(host, port)
            what = "an MLflow server already answers there" if answers_health(base) else "in use"
            if e.errno not in (98, 48):  # EADDRINUSE (Linux, macOS)
                what = e.strerror
            raise BadInput(f"port {port} on {host} is not free ({what}): pass --port N (e.g. --port {port + 1}), "
                           f"or stop what listens there") from None


def store_to_serve(uri: str) -> Path:
    """The directory `mlflow ui` runs in for `uri` (where a relative sqlite path points); BadInput for a sqlite store
    that does not exist (`mlflow ui` would create an empty one)."""
    db = sqlite_path(uri)
    if db is not None and not db.is_file():
        raise BadInput(f"no runs here yet: {db.absolute()} does not exist ({uri}); run `ringctl run ...` first or pass "
                       f"--tracking-uri")
    return Path.cwd()


class _Signals:
    """SIGINT/SIGTERM/SIGHUP recorded (not raised) while the server runs; the previous handlers come back on exit.
    The server is in a session of its own, so a closed terminal's SIGHUP reaches it only through here."""

    def __init__(self):
        self.received: int | None = None
        self._old: dict = {}

    def __enter__(self) -> _Signals:
        for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            self._old[s] = signal.signal(s, self._record)
        return self

    def _record(self, signum, frame) -> None:
        del frame
        self.received = self.received or signum

    def __exit__(self, *exc) -> None:
        for s, h in self._old.items():
            signal.signal(s, h)


def _stop(proc: subprocess.Popen, sig: int) -> None:
    """Send `sig` to the server's process group (its workers too); SIGKILL what is left after STOP_WAIT_S."""
    for s, wait in ((sig, STOP_WAIT_S), (signal.SIGKILL, STOP_WAIT_S)):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, s)
        try:
            proc.wait(timeout=wait)
            break
        except subprocess.TimeoutExpired:
            continue
    with contextlib.suppress(ProcessLookupError):  # a worker that outlived the main process
        os.killpg(proc.pid, signal.SIGKILL)


def _log_tail(log: Path, chars: int = 2000) -> str:
    try:
        return log.read_text(encoding="utf-8", errors="replace")[-chars:]
    except OSError:
        return ""


def serve(uri: str, host: str, port: int, experiment: str, run_id: str | None,
          on_ready: Callable[[Link, Path | None], None]) -> int:
    """Serve the MLflow UI for the tracking store `uri` until SIGINT/SIGTERM/SIGHUP (-> EXIT_INTERRUPTED), calling
    `on_ready(link, server_log)` once it answers. A tracking server (`http...`) is not served again: on_ready gets
    the link on it and this returns 0. BadInput (exit 2) for a missing sqlite store, a busy port, an unknown
    experiment or run; RingctlError when the server does not come up or dies."""
    if is_server_uri(uri):
        base = uri.rstrip("/")
        if not answers_health(base):
            raise BadInput(f"the tracking server {base} does not answer ({base}/health); start it, or pass "
                           f"--tracking-uri for another store")
        on_ready(find_link(base, uri, experiment, run_id, serving=False), None)
        return 0
    cwd = store_to_serve(uri)
    check_port(host, port)
    base = base_url(host, port)
    fd, log_name = tempfile.mkstemp(prefix="ringctl-ui-", suffix=".log")
    log = Path(log_name)
    cmd = [sys.executable, "-m", "mlflow", "ui", "--backend-store-uri", uri, "--host", host, "--port", str(port),
           "--workers", "1"]  # one person's browser: one worker (the default, 4, each import mlflow)
    # MLflow's server job runner (seven huey consumers serving GenAI trace jobs) is of no use to training runs and
    # takes the start from about 5 s to about 19 s, the stop from 4 s to past the SIGKILL, on 2 cores (measured);
    # the environment may still turn it on
    env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": os.environ.get("MLFLOW_SERVER_ENABLE_JOB_EXECUTION",
                                                                              "false")}
    with _Signals() as signals:
        with os.fdopen(fd, "wb") as out:
            proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdin=subprocess.DEVNULL, stdout=out,
                                    stderr=subprocess.STDOUT, start_new_session=True)  # stop reaches every worker

        def server_failed(what: str) -> RingctlError:
            nonlocal keep_log
            keep_log = True
            return RingctlError(f"`mlflow ui` {what}; its output ({log}) ends:\n{_log_tail(log)}")

        keep_log = False
        try:
            deadline = time.monotonic() + HEALTH_TIMEOUT_S
            while not answers_health(base):
                if signals.received:
                    return EXIT_INTERRUPTED
                if proc.poll() is not None:
                    raise server_failed(f"exited ({proc.returncode}) before answering {base}/health")
                if time.monotonic() > deadline:
                    raise server_failed(f"did not answer {base}/health within {HEALTH_TIMEOUT_S:.0f} s")
                time.sleep(0.3)
            on_ready(find_link(base, uri, experiment, run_id, serving=True), log)
            while not signals.received:
                try:
                    proc.wait(timeout=0.5)
                except subprocess.TimeoutExpired:
                    continue
                raise server_failed(f"exited ({proc.returncode}) while serving {base}")
            return EXIT_INTERRUPTED
        finally:
            _stop(proc, signal.SIGINT if signals.received == signal.SIGINT else signal.SIGTERM)
            if not keep_log:
                log.unlink(missing_ok=True)
