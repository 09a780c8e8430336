"""A resumable counting stage: `steps` steps, state saved every `save_every`, honours should_stop().

Its result is a pure function of its config and its input, so a killed-and-resumed run must produce exactly
the same result and metric history as an uninterrupted one.
"""

from __future__ import annotations

import json
import os
import signal
import time
from typing import Literal

from ringctl.pipeline.context import Artifact
from ringctl.recipe.base import StageConfig, StageRef

KIND = "toy_stages.counter"
OUTPUTS = ("result",)


class Config(StageConfig):
    kind: Literal["toy_stages.counter"] = "toy_stages.counter"
    steps: int = 5
    save_every: int = 1
    sleep: float = 0.0
    add: int = 1
    source: StageRef | None = None
    fail_at: int | None = None
    marker_dir: str | None = None  # each execution of run() drops a file here (to count reruns)
    # lost processes, once per file `once`: at step `die_at` the stage SIGKILLs itself, at `hang_at` it stops progressing
    die_at: int | None = None
    hang_at: int | None = None
    once: str | None = None


def run(cfg: Config, ctx) -> dict:
    if cfg.marker_dir:
        os.makedirs(cfg.marker_dir, exist_ok=True)
        with open(os.path.join(cfg.marker_dir, f"{ctx.stage_name}-{time.time_ns()}"), "w") as f:
            f.write(str(os.getpid()))
    total = 0
    if cfg.source:
        total = json.loads(ctx.input(cfg.source).read_text())["total"]
    step = 0
    state = ctx.resume_state()
    if state is not None:
        saved = json.loads((state / "state.json").read_text())
        step, total = saved["step"], saved["total"]
        ctx.tracker.rewind(step)
        if step >= cfg.steps:
            raise RuntimeError("resume would do zero steps")
    while step < cfg.steps:
        if cfg.fail_at is not None and step == cfg.fail_at:
            raise ValueError(f"failing on purpose at step {step}")
        if step in (cfg.die_at, cfg.hang_at) and cfg.once and not os.path.exists(cfg.once):
            open(cfg.once, "w").close()
            if step == cfg.die_at:
                os.kill(os.getpid(), signal.SIGKILL)
            while True:  # a hang: alive, no heartbeat
                time.sleep(1)
        time.sleep(cfg.sleep)
        total += cfg.add
        step += 1
        ctx.heartbeat()
        ctx.tracker.log_metrics(step, total=total)
        if step % cfg.save_every == 0 or step == cfg.steps:
            with ctx.save_state(f"step-{step:06d}") as d:
                (d / "state.json").write_text(json.dumps({"step": step, "total": total}))
        if ctx.should_stop():
            return {}
    out = ctx.outputs_dir / "result.json"
    out.write_text(json.dumps({"total": total, "steps": step}))
    ctx.tracker.set_tag("toy.total", str(total))  # a stage-side tag (journaled during a tracking outage)
    return {"result": Artifact(out, {"total": total})}
