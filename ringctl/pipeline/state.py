"""The local state file of a run (`<run_dir>/state.json`): the source of truth for resume, written atomically
on every transition, so that `resume` works even if the tracking server was unreachable for a while."""

from __future__ import annotations

import secrets
import time
from pathlib import Path

from ringctl import artifacts
from ringctl.errors import BadInput

STATE_FILE = "state.json"
RESOLVED_RECIPE = "recipe.resolved.yaml"
DONE = ("completed", "cached")


def new_run_id(recipe_name: str) -> str:
    return f"{recipe_name}-{time.strftime('%Y%m%d-%H%M%S')}-{secrets.token_hex(2)}"


class RunState:
    def __init__(self, run_dir: Path, data: dict):
        self.run_dir = Path(run_dir)
        self.data = data

    @classmethod
    def create(cls, run_dir: Path, run_id: str, recipe_name: str, source: str, overrides: list[str],
               order: list[str], kinds: dict[str, str], tracking_uri: str) -> RunState:
        now = time.time()
        data = {
            "run_id": run_id, "recipe": recipe_name, "recipe_source": source, "overrides": overrides,
            "status": "running", "created": now, "updated": now, "tracking_uri": tracking_uri,
            "mlflow_run_id": None, "order": order,
            "stages": {n: {"kind": kinds[n], "status": "pending", "fingerprint": None, "parts": None,
                           "mlflow_run_id": None, "outputs": {}, "stage_dir": None, "started": None,
                           "ended": None, "attempts": 0, "cached_from": None} for n in order},
        }
        st = cls(run_dir, data)
        st.save()
        return st

    @classmethod
    def load(cls, run_dir: Path) -> RunState:
        p = Path(run_dir) / STATE_FILE
        if not p.exists():
            raise BadInput(f"no run at {run_dir} (no {STATE_FILE}); `ringctl runs` lists the runs")
        return cls(run_dir, artifacts.read_json(p))

    def save(self) -> None:
        self.data["updated"] = time.time()
        artifacts.atomic_write_json(self.run_dir / STATE_FILE, self.data, kill_point="state-write")

    @property
    def run_id(self) -> str:
        return self.data["run_id"]

    @property
    def status(self) -> str:
        return self.data["status"]

    def stage(self, name: str) -> dict:
        return self.data["stages"][name]

    def set_stage(self, name: str, **fields) -> None:
        self.data["stages"][name].update(fields)
        self.save()

    def set_status(self, status: str) -> None:
        self.data["status"] = status
        self.save()


def find_run_dir(workdir: Path, run_id: str) -> Path:
    run_dir = Path(workdir) / run_id
    if not (run_dir / STATE_FILE).exists():
        known = [r["run_id"] for r in local_runs(workdir)]
        hint = f"; runs in {workdir}: {', '.join(known[:5])}" if known else f"; {workdir} holds no runs"
        raise BadInput(f"unknown run id {run_id!r}{hint} (use --workdir to point elsewhere)")
    return run_dir


def local_runs(workdir: Path) -> list[dict]:
    out = []
    for p in Path(workdir).glob(f"*/{STATE_FILE}") if Path(workdir).exists() else []:
        try:
            out.append(artifacts.read_json(p))
        except (OSError, ValueError):
            continue
    return sorted(out, key=lambda d: d.get("created", 0), reverse=True)


def latest_run(workdir: Path, want=None, what: str = "runs") -> dict:
    """The newest run in `workdir` (by creation time) for which `want(state_data)` holds (any run when None).
    BadInput naming the workdir when there is none, so `ringctl status` / `select-sft` without a run id can say why."""
    for data in local_runs(workdir):
        if want is None or want(data):
            return data
    raise BadInput(f"no {what} in {workdir} (use --workdir to point elsewhere, or pass a run id)")
