"""MLflow tracking: the only module that imports mlflow (and only inside functions).

Contract (DESIGN.md):
- one parent run per pipeline run: tags ringctl.recipe, ringctl.status, ringctl.run_id; artifact
  recipe.resolved.yaml; params = flattened recipe
- one nested run per stage: tags mlflow.parentRunId, ringctl.stage, ringctl.stage_kind, ringctl.fingerprint,
  ringctl.status (running | completed | cached | failed | interrupted)
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

DEFAULT_URI = "sqlite:///mlflow.db"
STATUS_TO_MLFLOW = {"completed": "FINISHED", "cached": "FINISHED", "failed": "FAILED", "interrupted": "KILLED"}


def resolve_uri(cli_uri: str | None = None, recipe_uri: str | None = None) -> str:
    """--tracking-uri, then the recipe's tracking.uri, then MLFLOW_TRACKING_URI, then sqlite:///mlflow.db."""
    return cli_uri or recipe_uri or os.environ.get("MLFLOW_TRACKING_URI") or DEFAULT_URI


def _quiet() -> None:
    import logging

    # MLflow writes "View run ... at <url>" to stdout; stdout belongs to --json documents
    os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")

    for name in ("mlflow", "alembic", "mlflow.store.db.utils"):
        logging.getLogger(name).setLevel(logging.WARNING)


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
        exp = self.client.get_experiment_by_name(experiment)
        self.experiment_id = exp.experiment_id if exp else self.client.create_experiment(experiment)

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


class MlflowSink:
    """Stage-side sink used by the Tracker in the stage process (rank 0 only)."""

    def __init__(self, uri: str, mlflow_run_id: str):
        _quiet()
        from mlflow.tracking import MlflowClient

        self.client = MlflowClient(tracking_uri=uri)
        self.run_id = mlflow_run_id

    def log_metrics(self, step: int, metrics: dict[str, float]) -> None:
        from mlflow.entities import Metric

        ts = int(time.time() * 1000)
        self.client.log_batch(self.run_id, metrics=[Metric(k, v, ts, step) for k, v in metrics.items()])

    def log_params(self, params: dict) -> None:
        from mlflow.entities import Param

        flat = [Param(k[:250], v) for k, v in flatten(params).items()]
        for i in range(0, len(flat), 100):
            self.client.log_batch(self.run_id, params=flat[i:i + 100])

    def set_tag(self, key: str, value: str) -> None:
        self.client.set_tag(self.run_id, key, value)

    def log_artifact(self, path: Path, artifact_path: str | None = None) -> None:
        if path.is_dir():
            self.client.log_artifacts(self.run_id, str(path), artifact_path)
        else:
            self.client.log_artifact(self.run_id, str(path), artifact_path)


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

    def connect(self, uri: str, experiment: str) -> TrackingProcess:
        self._call("__init__", uri, experiment)
        self.uri = uri
        return self

    def _call(self, name: str, *args, **kwargs):
        self._conn.send((name, args, kwargs))
        status, value = self._conn.recv()
        if status == "err":
            raise RuntimeError(value)
        return value

    def __getattr__(self, name: str):
        if name.startswith("_"):
            raise AttributeError(name)
        return lambda *a, **k: self._call(name, *a, **k)

    def close(self) -> None:
        try:
            self._conn.send(None)
            self._proc.join(timeout=30)
        except (OSError, EOFError, BrokenPipeError):
            pass


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
                tracking, result = Tracking(*args, **kwargs), None
            else:
                result = getattr(tracking, name)(*args, **kwargs)
                result = result if isinstance(result, (str, int, float, type(None))) else str(result)
            conn.send(("ok", result))
        except Exception as e:
            conn.send(("err", f"{type(e).__name__}: {e}"))
