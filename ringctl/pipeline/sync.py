"""`ringctl sync RUN_ID`: make MLflow agree with the run directory after a tracking outage.

The run directory is the source of truth (state.json, each stage's metrics.jsonl, manifest.json and stage.log,
recipe.resolved.yaml, and the journal of what a stage could not send: tags, params, artifacts). Sync reconciles
rather than replays, so it is idempotent: runs are found before any is created (by the ids in state.json, then by
tags), a metric (key, step) is logged only when MLflow's latest value for it differs from the local one, params
only when missing, artifacts only when missing or of another size. A second sync finds nothing to do.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

from ringctl import artifacts
from ringctl.pipeline.state import RESOLVED_RECIPE, RunState
from ringctl.tracking import STATUS_TO_MLFLOW, Journal, flatten, metric_history

TERMINAL = ("completed", "cached", "failed", "interrupted")


def pending(run_dir: Path) -> bool:
    """Whether the run recorded tracking operations that MLflow did not receive."""
    return Journal(run_dir).path.exists()


def _local_metrics(stage_dir: Path) -> dict[tuple[str, int], float]:
    p = Path(stage_dir) / "metrics.jsonl"
    out: dict[tuple[str, int], float] = {}
    if not p.exists():
        return out
    for line in p.read_text(encoding="utf-8").splitlines():
        try:
            rec = json.loads(line)
        except ValueError:  # a torn last line: the step it belonged to is replayed by a resume
            continue
        step = int(rec.pop("step", 0))
        for k, v in rec.items():
            out[(k, step)] = float(v)
    return out


def _same(a: float | None, b: float) -> bool:
    return a is not None and (a == b or (math.isnan(a) and math.isnan(b)))


class _Sync:
    def __init__(self, tracking, run_dir: Path, log_policy: str):
        self.trk = tracking
        self.c = tracking.client
        self.run_dir = Path(run_dir)
        self.state = RunState.load(self.run_dir)
        self.log_policy = log_policy
        self.counts = {"runs_created": 0, "metrics": 0, "params": 0, "tags": 0, "artifacts": 0, "journal_ops": 0}

    # -- helpers ---------------------------------------------------------------------------------------
    def _get(self, mlflow_id: str | None):
        if not mlflow_id:
            return None
        try:
            return self.c.get_run(mlflow_id)
        except Exception as e:  # deleted or from another server: found by tags below, or created
            if "RESOURCE_DOES_NOT_EXIST" in str(e) or "not found" in str(e).lower():
                return None
            raise

    def _search(self, filter_string: str):
        return self.c.search_runs([self.trk.experiment_id], filter_string=filter_string, max_results=50)

    def _tags(self, run, tags: dict) -> None:
        for k, v in tags.items():
            if v is not None and run.data.tags.get(k) != str(v):
                self.c.set_tag(run.info.run_id, k, str(v))
                self.counts["tags"] += 1

    def _params(self, run, params: dict[str, str]) -> None:
        from mlflow.entities import Param

        missing = [Param(k[:250], v) for k, v in params.items() if k[:250] not in run.data.params]
        for i in range(0, len(missing), 100):
            self.c.log_batch(run.info.run_id, params=missing[i:i + 100])
        self.counts["params"] += len(missing)

    def _artifact(self, mlflow_id: str, path: Path, artifact_path: str | None = None, listing=None) -> None:
        """Upload a file (or a directory) unless MLflow already holds it with the same size."""
        path = Path(path)
        if not path.exists():
            return
        if path.is_dir():
            if self._list(mlflow_id, f"{artifact_path}" if artifact_path else path.name):
                return
            self.c.log_artifacts(mlflow_id, str(path), artifact_path)
            self.counts["artifacts"] += 1
            return
        key = f"{artifact_path}/{path.name}" if artifact_path else path.name
        have = {a.path: a.file_size for a in (listing if listing is not None else self._list(mlflow_id, artifact_path))}
        if have.get(key) == path.stat().st_size:
            return
        self.c.log_artifact(mlflow_id, str(path), artifact_path)
        self.counts["artifacts"] += 1

    def _list(self, mlflow_id: str, artifact_path: str | None):
        try:
            return self.c.list_artifacts(mlflow_id, artifact_path)
        except Exception:
            return []

    def _terminate(self, run, status: str) -> None:
        want = STATUS_TO_MLFLOW.get(status)
        if want and run.info.status != want:
            self.c.set_terminated(run.info.run_id, status=want)

    # -- the parent run --------------------------------------------------------------------------------
    def parent(self):
        from ringctl.recipe.loader import load_resolved

        st = self.state
        rid = st.run_id
        run = self._get(st.data.get("mlflow_run_id"))
        if run is None:
            found = [r for r in self._search(f"tags.`ringctl.run_id` = '{rid}'")
                     if "mlflow.parentRunId" not in r.data.tags]
            run = found[0] if found else None
        if run is None:
            run = self.c.create_run(self.trk.experiment_id, run_name=rid, tags={
                "ringctl.recipe": st.data["recipe"], "ringctl.status": st.status, "ringctl.run_id": rid})
            self.counts["runs_created"] += 1
        if st.data.get("mlflow_run_id") != run.info.run_id:
            st.data["mlflow_run_id"] = run.info.run_id
            st.save()
        resolved = self.run_dir / RESOLVED_RECIPE
        loaded = load_resolved(resolved.read_text(encoding="utf-8"), str(resolved))
        self._params(run, flatten(loaded.resolved))
        self._artifact(run.info.run_id, resolved)
        return run

    # -- one stage -------------------------------------------------------------------------------------
    def stage(self, parent_id: str, name: str) -> dict:
        st = self.state.stage(name)
        row = {"name": name, "status": st["status"], "mlflow_run_id": None, "created": False, "metrics": 0}
        if st["status"] == "pending":
            return row
        run = self._get(st.get("mlflow_run_id"))
        if run is not None and run.data.tags.get("mlflow.parentRunId") != parent_id:
            run = None
        if run is None:
            found = self._search(f"tags.`mlflow.parentRunId` = '{parent_id}' and tags.`ringctl.stage` = '{name}'")
            run = found[0] if found else None
        if run is None:
            run = self.c.create_run(self.trk.experiment_id, run_name=name, tags={
                "mlflow.parentRunId": parent_id, "ringctl.stage": name, "ringctl.stage_kind": st["kind"],
                "ringctl.fingerprint": st["fingerprint"] or "", "ringctl.status": st["status"]})
            self.counts["runs_created"] += 1
            row["created"] = True
        mid = run.info.run_id
        row["mlflow_run_id"] = mid
        if st.get("mlflow_run_id") != mid:
            self.state.set_stage(name, mlflow_run_id=mid)
        self._tags(run, {"ringctl.status": st["status"], "ringctl.stage_kind": st["kind"],
                         "ringctl.fingerprint": st["fingerprint"], "ringctl.cached_from": st.get("cached_from"),
                         **{f"ringctl.output.{o}": p for o, p in (st.get("outputs") or {}).items()}})
        stage_dir = Path(st["stage_dir"]) if st.get("stage_dir") else None
        if st["status"] != "cached" and stage_dir is not None:  # a cached stage's files belong to its first run
            row["metrics"] = self._metrics(mid, stage_dir)
            manifest = artifacts.read_manifest(stage_dir)
            listing = self._list(mid, None)
            if st["status"] == "completed" and manifest is not None:
                if "manifest.json" not in {a.path for a in listing}:
                    self.c.log_dict(mid, manifest, "manifest.json")
                    self.counts["artifacts"] += 1
                for o, out in manifest.get("outputs", {}).items():
                    if self.log_policy == "all" or (self.log_policy == "final" and o in ("final", "checkpoint")):
                        p = Path(out["path"])
                        self._artifact(mid, p, f"outputs/{o}" if p.is_dir() else "outputs")
            self._artifact(mid, stage_dir / "stage.log", listing=listing)
        if st["status"] in TERMINAL:
            self._terminate(run, st["status"])
        return row

    def _metrics(self, mlflow_id: str, stage_dir: Path) -> int:
        import time

        from mlflow.entities import Metric

        local = _local_metrics(stage_dir)
        remote: dict[str, dict[int, float]] = {}
        for key in sorted({k for k, _ in local}):
            remote[key] = dict(metric_history(self.c, mlflow_id, key))
        ts = int(time.time() * 1000)
        missing = [Metric(k, v, ts, s) for (k, s), v in sorted(local.items()) if not _same(remote[k].get(s), v)]
        for i in range(0, len(missing), 1000):
            self.c.log_batch(mlflow_id, metrics=missing[i:i + 1000])
        self.counts["metrics"] += len(missing)
        return len(missing)

    # -- what stages could not send: tags, params, artifacts --------------------------------------------
    def journal(self, stage_ids: dict[str, str]) -> None:
        for e in Journal(self.run_dir).entries():
            mid, args = stage_ids.get(e.get("stage") or ""), e.get("args") or {}
            if mid is None:
                continue
            run = self.c.get_run(mid)
            if e["op"] == "set_tag":
                self._tags(run, {args["key"]: args["value"]})
            elif e["op"] == "log_params":
                self._params(run, args["params"])
            elif e["op"] == "log_artifact":
                self._artifact(mid, Path(args["path"]), args.get("artifact_path"))
            else:
                continue
            self.counts["journal_ops"] += 1

    def run(self) -> dict:
        parent = self.parent()
        pid = parent.info.run_id
        rows = [self.stage(pid, n) for n in self.state.data["order"]]
        self.journal({r["name"]: r["mlflow_run_id"] for r in rows if r["mlflow_run_id"]})
        parent = self.c.get_run(pid)
        self._tags(parent, {"ringctl.status": self.state.status})
        if self.state.status in TERMINAL:
            self._terminate(parent, self.state.status)
        Journal(self.run_dir).archive()
        return {"run_id": self.state.run_id, "status": "synced", "run_status": self.state.status,
                "mlflow_run_id": pid, **self.counts, "stages": rows}


def sync_run(tracking, run_dir: Path, log_policy: str = "final") -> dict:
    """Reconcile MLflow (through a `ringctl.tracking.Tracking`) with the run directory; returns a report."""
    return _Sync(tracking, run_dir, log_policy).run()
