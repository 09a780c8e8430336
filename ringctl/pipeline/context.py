"""What a stage's `run(cfg, ctx)` receives: the StageContext, and what it returns: Artifacts.

The context is built in the stage process (see `stage_main.py`); tests build one with `StageContext.for_test`.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ringctl import artifacts, chaos
from ringctl.pipeline import watchdog


@dataclass
class Artifact:
    """A stage output: a file or directory inside the stage directory, plus small metadata."""

    path: Path
    meta: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.path = Path(self.path)


class Tracker:
    """Metric/artifact sink for a stage. Writes `metrics.jsonl` in the stage dir (the local record that
    resume rewinds) and, when an MLflow run is attached, forwards to MLflow. Only rank 0 writes."""

    def __init__(self, stage_dir: Path, enabled: bool = True, mlflow_sink: Any = None):
        self.stage_dir = Path(stage_dir)
        self.enabled = enabled
        self.sink = mlflow_sink
        self._path = self.stage_dir / "metrics.jsonl"

    def log_metrics(self, step: int, **metrics: float) -> None:
        if not self.enabled:
            return
        clean = {k: float(v) for k, v in metrics.items() if v is not None}
        self.stage_dir.mkdir(parents=True, exist_ok=True)
        with open(self._path, "a", encoding="utf-8") as f:
            f.write(json.dumps({"step": int(step), **clean}) + "\n")
        if self.sink is not None:
            self.sink.log_metrics(step, clean)

    def log_params(self, **params: Any) -> None:
        if self.enabled and self.sink is not None:
            self.sink.log_params(params)

    def set_tag(self, key: str, value: str) -> None:
        if self.enabled and self.sink is not None:
            self.sink.set_tag(key, value)

    def log_artifact(self, path: Path, artifact_path: str | None = None) -> None:
        if self.enabled and self.sink is not None:
            self.sink.log_artifact(Path(path), artifact_path)

    def log_text(self, text: str, name: str) -> None:
        """Save a small text artifact (a report, a table) in the stage dir and in MLflow."""
        if not self.enabled:
            return
        p = self.stage_dir / name
        artifacts.atomic_write_text(p, text)
        self.log_artifact(p)

    def history(self) -> list[dict]:
        """Local metric history, one dict per log call (after any rewind)."""
        if not self._path.exists():
            return []
        out = []
        with open(self._path, encoding="utf-8") as f:
            for line in f:
                try:
                    out.append(json.loads(line))
                except ValueError:  # a line torn by a kill (its step is replayed on resume): never trusted
                    continue
        return out

    def rewind(self, step: int) -> None:
        """Drop local records logged after `step` (a resume replays them). MLflow keeps both values;
        `ringctl.tracking.metric_history` returns the latest value per step."""
        if not self.enabled or not self._path.exists():
            return
        kept = [r for r in self.history() if r["step"] <= step]
        artifacts.atomic_write_text(self._path, "".join(json.dumps(r) + "\n" for r in kept))


_STATE_RE = re.compile(r"^(?:step|epoch)-\d+$|^[A-Za-z0-9_\-]+$")


class StageContext:
    """Everything a stage needs from the orchestrator.

    - ``run_id``, ``stage_name``, ``stage_dir``: where the stage writes (``outputs_dir`` for outputs)
    - ``inputs``: resolved input artifacts keyed by reference string (``"filter.sft"``); ``ctx.input(ref)``
    - ``tracker``: ``log_metrics(step, **m)``, ``log_artifact(path)``, ``log_text``, ``set_tag``
    - ``seed``, ``recipe`` (the validated Recipe: model, resources, backends), ``deterministic``
    - ``rank``, ``world_size``, ``local_rank``, ``is_main``
    - ``resume_state()``: latest complete state directory of this stage, or None
    - ``save_state(tag)``: context manager yielding a temp dir that becomes ``state/<tag>`` atomically
    - ``should_stop()``: True after SIGINT/SIGTERM: save at the next step boundary and return
    - ``heartbeat()``: progress, once per training step (the runner's hang watchdog)
    """

    def __init__(
        self,
        *,
        run_id: str,
        stage_name: str,
        stage_dir: Path,
        inputs: dict[str, Artifact] | None = None,
        tracker: Tracker | None = None,
        seed: int = 0,
        recipe: Any = None,
        keep_states: int = 2,
    ):
        self.run_id = run_id
        self.stage_name = stage_name
        self.stage_dir = Path(stage_dir)
        self.inputs = dict(inputs or {})
        self.seed = seed
        self.recipe = recipe
        self.keep_states = keep_states
        self.rank = int(os.environ.get("RANK", "0"))
        self.world_size = int(os.environ.get("WORLD_SIZE", "1"))
        self.local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        self.tracker = tracker or Tracker(self.stage_dir, enabled=self.is_main)
        self._stop = threading.Event()
        self.stage_dir.mkdir(parents=True, exist_ok=True)
        self.outputs_dir.mkdir(parents=True, exist_ok=True)

    # -- construction for tests -------------------------------------------------------------------
    @classmethod
    def for_test(cls, tmp_path: Path, stage_name: str = "stage", inputs: dict[str, Any] | None = None,
                 recipe: Any = None, seed: int = 0) -> StageContext:
        arts = {k: v if isinstance(v, Artifact) else Artifact(Path(v)) for k, v in (inputs or {}).items()}
        return cls(run_id="test", stage_name=stage_name, stage_dir=Path(tmp_path) / stage_name,
                   inputs=arts, seed=seed, recipe=recipe)

    # -- properties ---------------------------------------------------------------------------------
    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def outputs_dir(self) -> Path:
        return self.stage_dir / artifacts.OUTPUTS_DIR

    @property
    def state_dir(self) -> Path:
        return self.stage_dir / artifacts.STATE_DIR

    @property
    def deterministic(self) -> bool:
        return bool(getattr(self.recipe, "deterministic", True))

    def input(self, ref: str) -> Path:
        if ref not in self.inputs:
            raise KeyError(f"stage {self.stage_name!r} has no input {ref!r}; it has {sorted(self.inputs)}")
        return self.inputs[ref].path

    # -- stopping -------------------------------------------------------------------------------------
    def request_stop(self) -> None:
        self._stop.set()

    def should_stop(self) -> bool:
        return self._stop.is_set()

    def install_signal_handlers(self) -> None:
        """SIGINT/SIGTERM set the stop flag; the stage saves at its next step boundary and returns."""
        def handler(signum, frame):  # noqa: ARG001
            self._stop.set()

        signal.signal(signal.SIGINT, handler)
        signal.signal(signal.SIGTERM, handler)

    def heartbeat(self) -> None:
        """A sign of progress for the runner's hang watchdog (`hang_timeout`): touches this rank's heartbeat file.
        Training loops call it at every step."""
        path = watchdog.heartbeat_path(self.stage_dir, self.rank)
        try:
            path.touch()
        except FileNotFoundError:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.touch()

    # -- resumable state ------------------------------------------------------------------------------
    def resume_state(self) -> Path | None:
        """The latest complete state directory (written through `save_state`), or None."""
        if not self.state_dir.exists():
            return None
        done = [p for p in self.state_dir.iterdir() if p.is_dir() and (p / "COMPLETE").exists()]
        if not done:
            return None
        return max(done, key=lambda p: json.loads((p / "COMPLETE").read_text()).get("seq", 0))

    @contextlib.contextmanager
    def save_state(self, tag: str) -> Iterator[Path]:
        """Write resumable state atomically: files go into the yielded dir, which becomes `state/<tag>`
        with a COMPLETE marker only when the block finishes. Older states beyond `keep_states` are pruned.
        Only the main rank should call this for rank-0-only state; DeepSpeed writes its own shards
        (see ringctl.train) into the same directory before the marker."""
        if not _STATE_RE.match(tag):
            raise ValueError(f"bad state tag {tag!r}")
        prev = self.resume_state()
        seq = (json.loads((prev / "COMPLETE").read_text())["seq"] + 1) if prev else 1
        with artifacts.atomic_dir(self.state_dir / tag, kill_point="checkpoint-write", previous=prev) as tmp:
            yield tmp
            artifacts.atomic_write_json(tmp / "COMPLETE", {"seq": seq, "tag": tag})
        self._prune_states()

    @contextlib.contextmanager
    def save_state_shared(self, tag: str, barrier) -> Iterator[Path]:
        """`save_state` for several ranks writing one state (DeepSpeed shards): every rank writes into the same
        temporary directory; after a barrier, rank 0 adds the COMPLETE marker and renames it into place. A rank whose
        write fills the device removes the temporary directory and raises DiskFull (the other ranks stop with the
        launcher); the previous state stays the latest."""
        if not _STATE_RE.match(tag):
            raise ValueError(f"bad state tag {tag!r}")
        tmp = self.state_dir / f".tmp-{tag}-shared"
        prev = self.resume_state()
        seq = (json.loads((prev / "COMPLETE").read_text())["seq"] + 1) if prev else 1
        if self.is_main:
            shutil.rmtree(tmp, ignore_errors=True)
            tmp.mkdir(parents=True)
        barrier()
        target = self.state_dir / tag
        with artifacts.disk_full_guard(target, tmp, prev):
            yield tmp
        barrier()
        if self.is_main:
            with artifacts.disk_full_guard(target, tmp, prev):
                artifacts.atomic_write_json(tmp / "COMPLETE", {"seq": seq, "tag": tag})
            if target.exists():
                shutil.rmtree(target)
            chaos.point("checkpoint-write")
            os.replace(tmp, target)
            self._prune_states()
        barrier()

    def _prune_states(self) -> None:
        done = [p for p in self.state_dir.iterdir() if p.is_dir() and (p / "COMPLETE").exists()]
        done.sort(key=lambda p: json.loads((p / "COMPLETE").read_text()).get("seq", 0))
        for p in done[: max(0, len(done) - self.keep_states)]:
            shutil.rmtree(p, ignore_errors=True)
