"""`ringctl runs` and `ringctl status`: MLflow first, the local run directories as the fallback."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

from ringctl.pipeline.state import RunState, find_run_dir, local_runs


def _iso(ts: float | None) -> str | None:
    return dt.datetime.fromtimestamp(ts, dt.timezone.utc).isoformat(timespec="seconds") if ts else None


def list_runs(workdir: Path, tracking_uri: str | None, limit: int = 50) -> list[dict]:
    from ringctl.tracking import Tracking, resolve_uri

    rows: dict[str, dict] = {}
    try:
        trk = Tracking(resolve_uri(tracking_uri))
        for r in trk.pipeline_runs(limit):
            tags = r.data.tags
            rows[tags["ringctl.run_id"]] = {"run_id": tags["ringctl.run_id"], "recipe": tags.get("ringctl.recipe"),
                                            "status": tags.get("ringctl.status"),
                                            "start_time": _iso(r.info.start_time / 1000)}
    except Exception:  # unreachable server: fall back to what the run directories say
        pass
    for d in local_runs(workdir):
        rows.setdefault(d["run_id"], {"run_id": d["run_id"], "recipe": d["recipe"], "status": d["status"],
                                      "start_time": _iso(d.get("created"))})
    out = sorted(rows.values(), key=lambda r: r["start_time"] or "", reverse=True)
    return out[:limit]


def run_status(workdir: Path, run_id: str, tracking_uri: str | None) -> dict:
    run_dir = find_run_dir(workdir, run_id)
    st = RunState.load(run_dir).data
    return {"run_id": st["run_id"], "recipe": st["recipe"], "status": st["status"], "run_dir": str(run_dir),
            "mlflow_run_id": st.get("mlflow_run_id"),
            "stages": [{"name": n, "kind": s["kind"], "status": s["status"], "fingerprint": s["fingerprint"],
                        "mlflow_run_id": s["mlflow_run_id"], "outputs": s["outputs"], "cached_from": s["cached_from"],
                        "started": _iso(s["started"]), "ended": _iso(s["ended"])}
                       for n, s in ((n, st["stages"][n]) for n in st["order"])]}
