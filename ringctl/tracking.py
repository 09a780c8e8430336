"""MLflow tracking: the only module that imports mlflow (and only inside functions).

Contract (docs/architecture.md, "Tracking"):
- one parent run per pipeline run: tags ringctl.recipe, ringctl.status, ringctl.run_id; artifact
  recipe.resolved.yaml; params = flattened recipe
- one nested run per stage: tags mlflow.parentRunId, ringctl.stage, ringctl.stage_kind, ringctl.fingerprint,
  ringctl.status (running | completed | cached | failed | interrupted)
- the experiment carries mlflow.experimentKind = custom_model_development unless the user set a kind; an ended
  run's MLflow status is FINISHED (completed, cached), FAILED (failed) or KILLED (interrupted)
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

DEFAULT_URI = "sqlite:///mlflow.db"
STOP_GRACE_S = 2.0  # after Ctrl-C/SIGTERM, a tracking call may take this long before it is abandoned
# ringctl.status -> MLflow run status: an interrupt (Ctrl-C, SIGTERM) is KILLED, never FAILED
STATUS_TO_MLFLOW = {"completed": "FINISHED", "cached": "FINISHED", "failed": "FAILED", "interrupted": "KILLED"}
# The experiment tag MLflow's UI reads for an experiment's kind (value names from its JavaScript bundle): ringctl's
# experiment holds training runs, not GenAI traces. A kind set by the user is never overwritten.
EXPERIMENT_KIND_TAG = "mlflow.experimentKind"
EXPERIMENT_KIND = "custom_model_development"
# ...but MLflow 3.17's UI does not read that tag: it opens an experiment in its GenAI view (traces) unless the link
# asks for the training runs (or the browser kept its "Model training" switch). Every link ringctl prints asks.
UI_RUNS_VIEW = "?workflowType=machine_learning"
UI_DEFAULT_BASE = "http://127.0.0.1:5000"  # where `ringctl ui` serves without --host / --port


def resolve_uri(cli_uri: str | None = None, recipe_uri: str | None = None) -> str:
    """--tracking-uri, then the recipe's tracking.uri, then MLFLOW_TRACKING_URI, then sqlite:///mlflow.db."""
    return cli_uri or recipe_uri or os.environ.get("MLFLOW_TRACKING_URI") or DEFAULT_URI


def is_server_uri(uri: str) -> bool:
    """A tracking server (its UI is already served), as opposed to a store that `mlflow ui` has to serve."""
    return uri.startswith(("http://", "https://"))


def sqlite_path(uri: str) -> Path | None:
    """The database file of a `sqlite:///` URI (relative to the working directory, or absolute with four slashes);
    None for any other URI."""
    if not uri.startswith("sqlite:///"):
        return None
    return Path(uri[len("sqlite:///"):].split("?", 1)[0])


def ui_link(base: str, experiment_id: str, mlflow_run_id: str | None = None) -> str:
    """The MLflow UI page of the experiment's training runs, or of one run, on the UI served at `base`."""
    page = f"{base.rstrip('/')}/#/experiments/{experiment_id}"
    return (f"{page}/runs/{mlflow_run_id}" if mlflow_run_id else page) + UI_RUNS_VIEW


# MLflow's HTTP client retries a failed request 7 times with exponential backoff (factor 2) and waits up to 120 s
# per request: minutes per call when the server is gone. ringctl bounds it (about 3 s for a refused connection,
# about 35 s for a server that accepts but never answers), then goes on offline and `ringctl sync` uploads later.
# Set any of these in the environment to choose otherwise.
BOUNDED_HTTP_ENV = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2", "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
                    "MLFLOW_HTTP_REQUEST_BACKOFF_JITTER": "0.5", "MLFLOW_HTTP_REQUEST_TIMEOUT": "10"}


def _quiet() -> None:
    import logging

    # MLflow writes "View run ... at <url>" to stdout; stdout belongs to --json documents
    os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")
    for k, v in BOUNDED_HTTP_ENV.items():
        os.environ.setdefault(k, v)

    for name in ("mlflow", "alembic", "mlflow.store.db.utils"):
        logging.getLogger(name).setLevel(logging.WARNING)


def short_reason(e: BaseException) -> str:
    """Why a tracking call failed, in a few words (the client's own message runs to several hundred characters)."""
    text = str(e)
    for needle, says in (("Connection refused", "connection refused"), ("timed out", "timed out"),
                         ("did not return within", "no answer"), ("Name or service not known", "unknown host")):
        if needle in text:
            return says
    return f"{type(e).__name__}: {text[:160]}"


def flatten(d: Any, prefix: str = "") -> dict[str, str]:
    out: dict[str, str] = {}
    if isinstance(d, dict):
        for k, v in d.items():
            out.update(flatten(v, f"{prefix}.{k}" if prefix else str(k)))
    elif isinstance(d, list) and d and any(isinstance(x, (dict, list)) for x in d):
        for i, v in enumerate(d):
            out.update(flatten(v, f"{prefix}.{i}"))
    else:
        out[prefix] = str(d)[:6000]
    return out


class Tracking:
    """Parent-side tracking: creates/ends runs and sets tags through MlflowClient (no global active run)."""

    def __init__(self, uri: str, experiment: str = "ringctl"):
        _quiet()
        from mlflow.tracking import MlflowClient

        self.uri = uri
        self.client = MlflowClient(tracking_uri=uri)
        self.experiment_id = self._experiment(experiment)

    def _experiment(self, name: str) -> str:
        """The experiment's id; created with (or, when it lacks one, given) the kind tag for training runs."""
        exp = self.client.get_experiment_by_name(name)
        if exp is None:
            try:
                return self.client.create_experiment(name, tags={EXPERIMENT_KIND_TAG: EXPERIMENT_KIND})
            except Exception:  # another run created it meanwhile (a tracking server, where no lock serialises)
                exp = self.client.get_experiment_by_name(name)
                if exp is None:
                    raise
        if EXPERIMENT_KIND_TAG not in exp.tags:
            self.client.set_experiment_tag(exp.experiment_id, EXPERIMENT_KIND_TAG, EXPERIMENT_KIND)
        return exp.experiment_id

    # -- parent run -----------------------------------------------------------------------------------
    def start_pipeline(self, run_id: str, recipe_name: str, resolved: dict, resolved_path: Path) -> str:
        from mlflow.entities import Param

        run = self.client.create_run(self.experiment_id, run_name=run_id, tags={
            "ringctl.recipe": recipe_name, "ringctl.status": "running", "ringctl.run_id": run_id})
        rid = run.info.run_id
        params = [Param(k[:250], v) for k, v in flatten(resolved).items()]
        for i in range(0, len(params), 100):
            self.client.log_batch(rid, params=params[i:i + 100])
        self.client.log_artifact(rid, str(resolved_path))
        return rid

    def reopen(self, mlflow_run_id: str) -> None:
        self.client.update_run(mlflow_run_id, status="RUNNING")
        self.client.set_tag(mlflow_run_id, "ringctl.status", "running")

    def finish(self, mlflow_run_id: str, status: str) -> None:
        self.client.set_tag(mlflow_run_id, "ringctl.status", status)
        self.client.set_terminated(mlflow_run_id, status=STATUS_TO_MLFLOW.get(status, "FINISHED"))

    # -- stage runs -----------------------------------------------------------------------------------
    def start_stage(self, parent_id: str, stage: str, kind: str, fingerprint: str, status: str = "running",
                    extra_tags: dict | None = None) -> str:
        run = self.client.create_run(self.experiment_id, run_name=stage, tags={
            "mlflow.parentRunId": parent_id, "ringctl.stage": stage, "ringctl.stage_kind": kind,
            "ringctl.fingerprint": fingerprint, "ringctl.status": status, **(extra_tags or {})})
        return run.info.run_id

    def set_tags(self, mlflow_run_id: str, **tags: str) -> None:
        for k, v in tags.items():
            self.client.set_tag(mlflow_run_id, k, v)

    def log_checkpoints(self, mlflow_run_id: str, manifest: dict, policy: str) -> None:
        """Record every output's path and sha256 as tags; upload per `log_checkpoints` (none|final|all)."""
        for name, out in manifest.get("outputs", {}).items():
            self.client.set_tag(mlflow_run_id, f"ringctl.output.{name}", out["path"])
        self.client.log_dict(mlflow_run_id, manifest, "manifest.json")
        if policy == "none":
            return
        for name, out in manifest.get("outputs", {}).items():
            if policy == "all" or name in ("final", "checkpoint"):
                p = Path(out["path"])
                if p.is_dir():
                    self.client.log_artifacts(mlflow_run_id, str(p), f"outputs/{name}")
                elif p.exists():
                    self.client.log_artifact(mlflow_run_id, str(p), "outputs")

    def log_stage_log(self, mlflow_run_id: str, log_path: Path) -> None:
        if Path(log_path).exists():
            self.client.log_artifact(mlflow_run_id, str(log_path))

    def apply(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """`fn(self, *args, **kwargs)`: a module-level function run against this client. Called on a
        `TrackingProcess`, it runs in the tracking helper (`fn` travels by name), with the helper's bounded wait:
        e.g. `trk.apply(sync_run, run_dir, policy)` (ringctl.pipeline.sync)."""
        return fn(self, *args, **kwargs)

    # -- queries --------------------------------------------------------------------------------------
    def pipeline_runs(self, max_results: int = 100) -> list[Any]:
        return self.client.search_runs([self.experiment_id], filter_string="tags.`ringctl.run_id` != ''",
                                       order_by=["attributes.start_time DESC"], max_results=max_results)

    def find_pipeline(self, run_id: str):
        runs = self.client.search_runs([self.experiment_id], filter_string=f"tags.`ringctl.run_id` = '{run_id}'")
        return runs[0] if runs else None

    def stage_runs(self, parent_id: str) -> list[Any]:
        return self.client.search_runs([self.experiment_id],
                                       filter_string=f"tags.`mlflow.parentRunId` = '{parent_id}'")


PENDING_FILE = "tracking.pending.jsonl"  # in the run directory: what MLflow did not receive (see `ringctl sync`)
SYNCED_FILE = "tracking.synced.jsonl"    # the same entries once `ringctl sync` uploaded them
ENV_TRACKING_OFFLINE = "RINGCTL_TRACKING_OFFLINE"  # set for a stage process when the orchestrator is offline


class Journal:
    """Append-only record of tracking operations that could not be sent. Metrics are not copied here: they are in
    each stage's metrics.jsonl, from which `ringctl sync` uploads what MLflow misses; tags, params and artifacts
    logged from inside a stage are recorded here. Several processes append (one short write per line)."""

    def __init__(self, run_dir: Path):
        self.path = Path(run_dir) / PENDING_FILE

    def add(self, op: str, stage: str | None = None, error: str | None = None, **args: Any) -> None:
        import json

        line = json.dumps({"time": time.time(), "op": op, "stage": stage, "error": error, "args": args},
                          default=str) + "\n"
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(line)

    def entries(self) -> list[dict]:
        import json

        if not self.path.exists():
            return []
        out = []
        for line in self.path.read_text(encoding="utf-8").splitlines():
            try:
                out.append(json.loads(line))
            except ValueError:  # a line torn by a kill: the data it named is re-derived by sync anyway
                continue
        return out

    def archive(self) -> None:
        """After a successful sync: move the entries to tracking.synced.jsonl."""
        if self.path.exists():
            with open(self.path.parent / SYNCED_FILE, "a", encoding="utf-8") as f:
                f.write(self.path.read_text(encoding="utf-8"))
            self.path.unlink()


class MlflowSink:
    """Stage-side sink used by the Tracker in the stage process (rank 0 only).

    Calls are queued and sent by a background thread, so a slow or unreachable tracking server never holds up a
    training step (nor a stop request). The first failure turns the sink offline: nothing more is sent, and tags,
    params and artifacts go to the run's journal (metrics are in metrics.jsonl); `ringctl sync` uploads both.
    """

    def __init__(self, uri: str, mlflow_run_id: str | None, journal: Journal | None = None, stage: str | None = None,
                 offline: bool = False):
        import queue
        import threading

        self.uri = uri
        self.run_id = mlflow_run_id
        self.journal = journal
        self.stage = stage
        self.offline = offline or not mlflow_run_id
        self.client = None
        self._inflight = None
        self._queue: queue.Queue = queue.Queue()
        self._thread = None
        if not self.offline:
            self._thread = threading.Thread(target=self._worker, name="ringctl-mlflow-sink", daemon=True)
            self._thread.start()

    # -- the Tracker's interface: enqueue ----------------------------------------------------------------
    def log_metrics(self, step: int, metrics: dict[str, float]) -> None:
        self._put("log_metrics", step=step, metrics=metrics, ts=int(time.time() * 1000))

    def log_params(self, params: dict) -> None:
        self._put("log_params", params=flatten(params))

    def set_tag(self, key: str, value: str) -> None:
        self._put("set_tag", key=key, value=str(value))

    def log_artifact(self, path: Path, artifact_path: str | None = None) -> None:
        self._put("log_artifact", path=str(Path(path).resolve()), artifact_path=artifact_path)

    def _put(self, op: str, **args) -> None:
        if self.offline:
            self._keep(op, args)
        else:
            self._queue.put((op, args))

    def _keep(self, op: str, args: dict, error: str | None = None) -> None:
        if op == "log_metrics" or self.journal is None:
            return  # metrics.jsonl holds them
        self.journal.add(op, stage=self.stage, error=error, **args)

    # -- the sender ----------------------------------------------------------------------------------------
    def _worker(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                self._queue.task_done()
                return
            op, args = item
            self._inflight = item
            try:
                if not self.offline:
                    self._send(op, args)
                else:
                    self._keep(op, args)
            except Exception as e:  # the first failure: offline for the rest of this stage process
                self._go_offline(short_reason(e))
                self._keep(op, args, str(e)[:300])
            finally:
                self._inflight = None
                self._queue.task_done()

    def _go_offline(self, error: str) -> None:
        import sys

        self.offline = True
        if self.journal is not None:
            self.journal.add("offline", stage=self.stage, error=error[:300])
        print(f"[ringctl] MLflow at {self.uri} unreachable ({error[:200]}); the stage goes on, its metrics stay in "
              f"metrics.jsonl and `ringctl sync` uploads them", file=sys.stderr, flush=True)

    def _send(self, op: str, args: dict) -> None:
        if self.client is None:
            _quiet()
            from mlflow.tracking import MlflowClient

            self.client = MlflowClient(tracking_uri=self.uri)
        if op == "log_metrics":
            from mlflow.entities import Metric

            self.client.log_batch(self.run_id, metrics=[Metric(k, v, args["ts"], args["step"])
                                                        for k, v in args["metrics"].items()])
        elif op == "log_params":
            from mlflow.entities import Param

            flat = [Param(k[:250], v) for k, v in args["params"].items()]
            for i in range(0, len(flat), 100):
                self.client.log_batch(self.run_id, params=flat[i:i + 100])
        elif op == "set_tag":
            self.client.set_tag(self.run_id, args["key"], args["value"])
        elif op == "log_artifact":
            p = Path(args["path"])
            if p.is_dir():
                self.client.log_artifacts(self.run_id, str(p), args["artifact_path"])
            else:
                self.client.log_artifact(self.run_id, str(p), args["artifact_path"])

    def close(self, timeout: float = 60.0) -> None:
        """Send what is queued, waiting at most `timeout` s; whatever is left then goes to the journal."""
        if self._thread is None:
            return
        self._queue.put(None)
        self._thread.join(timeout)
        if self._thread.is_alive():  # stuck on the network: keep the rest locally and let the process exit
            self.offline = True
            if self.journal is not None:
                self.journal.add("offline", stage=self.stage, error=f"not sent within {timeout:.0f} s at stage end")
            if self._inflight is not None:
                self._keep(*self._inflight)
            while True:
                try:
                    item = self._queue.get_nowait()
                except Exception:
                    break
                if item is not None:
                    self._keep(*item)


def metric_history(client, mlflow_run_id: str, key: str) -> list[tuple[int, float]]:
    """(step, value) sorted by step; when a resume re-logged a step, the latest value wins."""
    latest: dict[int, tuple[int, float]] = {}
    for m in client.get_metric_history(mlflow_run_id, key):
        if m.step not in latest or m.timestamp >= latest[m.step][0]:
            latest[m.step] = (m.timestamp, m.value)
    return [(s, v) for s, (_, v) in sorted(latest.items())]


class TrackingProcess:
    """`Tracking` served from a forked helper process.

    Importing mlflow and opening its store takes seconds; `ringctl run` starts this first thing, so the import
    overlaps with recipe loading on another core. Calls are forwarded over a pipe and behave like `Tracking`'s
    methods (errors come back as RuntimeError). The helper ignores SIGINT (Ctrl-C must not lose the final
    status update) and exits when the pipe closes, i.e. also when the orchestrator is killed.
    """

    def __init__(self):
        import multiprocessing as mp

        ctx = mp.get_context("fork")
        self._conn, child = ctx.Pipe()
        self._proc = ctx.Process(target=_serve, args=(child,), daemon=True, name="ringctl-tracking")
        self._proc.start()
        child.close()
        self.uri = None
        self.experiment_id: str | None = None  # set by connect (a plain attribute: not forwarded to the helper)
        self._dead = False
        self.call_timeout = float(os.environ.get("RINGCTL_TRACKING_CALL_TIMEOUT", "120"))
        self.stop_requested = lambda: False  # the runner points this at its signal state

    def connect(self, uri: str, experiment: str) -> TrackingProcess:
        self.experiment_id = self._call("__init__", uri, experiment)
        self.uri = uri
        return self

    def _call(self, name: str, *args, **kwargs):
        """Forward one call. The wait is bounded: past `call_timeout` s, or `STOP_GRACE_S` s after a stop was
        requested (`stop_requested()`), the helper is killed and the call fails, so tracking never holds the run."""
        if self._dead:
            raise RuntimeError("the tracking helper was stopped after an earlier call did not return")
        self._conn.send((name, args, kwargs))
        start, stop_seen = time.monotonic(), None
        while not self._conn.poll(0.2):
            now = time.monotonic()
            if stop_seen is None and self.stop_requested():
                stop_seen = now
            if not self._proc.is_alive():
                self._dead = True
                raise RuntimeError("the tracking helper process died")
            if now - start > self.call_timeout or (stop_seen is not None and now - stop_seen > STOP_GRACE_S):
                self._abandon()
                raise TimeoutError(f"MLflow call {name} did not return within {now - start:.0f} s")
        status, value = self._conn.recv()
        if status == "err":
            raise RuntimeError(value)
        return value

    def _abandon(self) -> None:
        self._dead = True
        with contextlib.suppress(OSError, AttributeError):
            self._proc.kill()
            self._proc.join(timeout=5)

    def __getattr__(self, name: str):
        if name.startswith("_"):
            raise AttributeError(name)
        return lambda *a, **k: self._call(name, *a, **k)

    def close(self) -> None:
        try:
            if not self._dead:
                self._conn.send(None)
                self._proc.join(timeout=5)  # no call is in flight here: it only has to exit
        except (OSError, EOFError, BrokenPipeError):
            pass
        if self._proc.is_alive():
            self._abandon()


def _serve(conn) -> None:
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").prctl(1, signal.SIGKILL)  # die with the orchestrator
    except (OSError, AttributeError):
        pass
    _quiet()
    import mlflow.tracking  # noqa: F401  (the slow part, done while the parent loads the recipe)

    tracking = None
    while True:
        try:
            msg = conn.recv()
        except EOFError:
            return
        if msg is None:
            return
        name, args, kwargs = msg
        try:
            if name == "__init__":
                tracking = Tracking(*args, **kwargs)
                result = tracking.experiment_id
            else:
                result = getattr(tracking, name)(*args, **kwargs)
                result = result if isinstance(result, (str, int, float, type(None))) else str(result)
            conn.send(("ok", result))
        except Exception as e:
            conn.send(("err", f"{type(e).__name__}: {e}"))
