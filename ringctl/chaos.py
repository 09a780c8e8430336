"""Kill points for the chaos-resume harness (`bench/chaos_resume.py`): named moments inside writes that a random
time offset would almost never hit (a checkpoint directory complete but not renamed, a manifest written but not
renamed, a stage returned but its manifest not written, a stage exited but the run's state not updated).

Off unless RINGCTL_CHAOS_FILE names a file: then one environment lookup per point, and every point reached is
appended to `<file>.hits.jsonl` (the harness learns from a reference run which moments exist). The file arms one
moment: {"id": ..., "point": ..., "stage": ..., "nth": N}; the N-th time this process reaches that point in that
stage (counted since it was armed), the process SIGKILLs its whole process group: the orchestrator, the stage
and the tracking helper die together, as on a node loss. The file is re-read at each point, so the harness can
arm the next moment while a run goes on.

Bad numerics: RINGCTL_CHAOS_NAN_AT=<stage>:<step>[:<rank>][,...] makes that stage's training loss NaN at that step
(on every rank, or on the one named), through `nan_loss`; the stage's non-finite checks (ringctl.train.numerics)
then stop it or skip the update.
"""

from __future__ import annotations

import json
import os
import signal
import time

ENV_FILE = "RINGCTL_CHAOS_FILE"
ENV_NAN_AT = "RINGCTL_CHAOS_NAN_AT"
ENV_STAGE = "RINGCTL_STAGE"  # set in a stage process (stage_main); the orchestrator passes its stage explicitly

_counts: dict[str, int] = {}


def point(name: str, stage: str | None = None) -> None:
    path = os.environ.get(ENV_FILE)
    if not path:
        return
    stage = stage if stage is not None else os.environ.get(ENV_STAGE, "")
    _append(path + ".hits.jsonl", {"time": time.time(), "point": name, "stage": stage, "pid": os.getpid()})
    try:
        with open(path, encoding="utf-8") as f:
            arm = json.load(f)
    except (OSError, ValueError):
        return
    if not arm or arm.get("point") != name or arm.get("stage", stage) != stage:
        return
    key = str(arm.get("id"))
    _counts[key] = _counts.get(key, 0) + 1
    if _counts[key] >= int(arm.get("nth", 1)):
        _append(path + ".fired.jsonl", {"time": time.time(), "id": arm.get("id"), "point": name, "stage": stage})
        os.killpg(os.getpgrp(), signal.SIGKILL)


def _append(path: str, rec: dict) -> None:
    with open(path, "a", encoding="utf-8") as f:
        f.write(json.dumps(rec) + "\n")


def nan_loss(loss, stage: str, step: int):
    """`loss` times NaN (a tensor keeps its graph, so the gradients turn NaN too) when RINGCTL_CHAOS_NAN_AT names
    this stage and step (and this rank, when a rank is given); `loss` itself otherwise."""
    spec = os.environ.get(ENV_NAN_AT)
    if not spec:
        return loss
    rank = os.environ.get("RANK", "0")
    for item in spec.split(","):
        parts = item.strip().split(":")
        if len(parts) not in (2, 3):
            raise ValueError(f"{ENV_NAN_AT}={spec!r}: expected <stage>:<step>[:<rank>][,...]")
        if parts[0] == stage and int(parts[1]) == step and (len(parts) == 2 or parts[2] == rank):
            return loss * float("nan")
    return loss
