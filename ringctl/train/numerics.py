"""Non-finite losses and gradient norms in a training stage, under the stage's `on_nonfinite`.

    guard = NonFiniteGuard(ctx.stage_name, cfg.on_nonfinite)
    at = guard.at(step + 1)                           # the stage's step being trained
    loss = at.inject(loss)                            # the chaos harness's NaN (RINGCTL_CHAOS_NAN_AT), else a no-op
    grad_norm = engine.step(check=at.check(local_loss))

`stop` (the default): the stage fails with one error naming the stage, the step, which value (loss or grad norm)
and the value, before the optimizer applies the update; nothing is written after that step, so the stage's last
checkpoint is the last good state and `ringctl resume` continues from it.
`skip_step`: the update is not applied (the gradients are zeroed, the optimizer's state is untouched) and
`train/skipped_steps` counts it. The step still uses up its batch and advances the learning-rate schedule, so the
data position and the schedule stay where an unskipped run has them; the update is lost, not retried.

Every rank takes the same decision: the engines report the norm of the all-reduced gradients, and the loss checked
is the sum over ranks of each rank's share of the step's loss.
"""

from __future__ import annotations

import math
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from ringctl import chaos
from ringctl.errors import NonFiniteError

OnNonFinite = Literal["stop", "skip_step"]
SKIPPED_METRIC = "train/skipped_steps"
# what an engine calls after the gradients are reduced and before it applies the update: (grad norm, or None when
# the engine does not know it; whether the update can still be withheld) -> apply it?
UpdateCheck = Callable[[float | None, bool], bool]


def check_finite(stage: str, step: int, on_nonfinite: OnNonFinite, *, loss: float | None = None,
                 grad_norm: float | None = None, can_skip: bool = True) -> bool:
    """True: the values are finite, apply the update. A non-finite loss or gradient norm: False under skip_step
    (the caller withholds the update), else NonFiniteError. The values must be global (the same on every rank).
    `can_skip` False: the engine has already applied the update (DeepSpeed without its own overflow check), so
    skip_step cannot withhold it and the stage stops too."""
    bad = [(name, value) for name, value in (("loss", loss), ("grad norm", grad_norm))
           if value is not None and not math.isfinite(value)]
    if not bad:
        return True
    found = " and ".join(f"{name} {value}" for name, value in bad)
    if on_nonfinite == "skip_step" and can_skip:
        if int(os.environ.get("RANK", "0")) == 0:
            print(f"[{stage}] step {step}: non-finite {found}: update skipped (on_nonfinite: skip_step)",
                  file=sys.stderr, flush=True)
        return False
    why = "" if on_nonfinite == "stop" else (
        "on_nonfinite: skip_step could not withhold this update: DeepSpeed had already applied it (ZeRO stages 1-3 "
        "in fp32 or fp16 skip a non-finite step themselves, ZeRO stage 0 and bf16 do not).\n")
    raise NonFiniteError(
        f"stage {stage!r}: non-finite {found} at step {step}: training stopped there.\n{why}"
        f"Nothing was saved after it, so the stage's last checkpoint is the last good state: fix the cause "
        f"(learning rate, data, precision) and `ringctl resume` the run, or set `on_nonfinite: skip_step` on the "
        f"stage to skip such updates.")


class NonFiniteGuard:
    """One stage's `on_nonfinite` policy and its count of skipped updates (part of the stage's resumable state)."""

    def __init__(self, stage: str, on_nonfinite: OnNonFinite = "stop", skipped: int = 0):
        self.stage, self.on_nonfinite, self.skipped = stage, on_nonfinite, int(skipped)

    def at(self, step: int) -> StepGuard:
        return StepGuard(self, step)

    def metrics(self) -> dict[str, float]:
        """`train/skipped_steps` (so far) under skip_step; nothing under stop, where a skip never happens."""
        return {SKIPPED_METRIC: float(self.skipped)} if self.on_nonfinite == "skip_step" else {}


@dataclass(frozen=True)
class StepGuard:
    """The guard at one step of the stage (RL makes several optimizer updates in one step)."""

    guard: NonFiniteGuard
    step: int

    def inject(self, loss):
        return chaos.nan_loss(loss, self.guard.stage, self.step)

    def check(self, local_loss: float) -> UpdateCheck:
        """The engine's check for one optimizer update; `local_loss` is this rank's share of the update's loss, summed
        over the ranks inside the check (every rank calls it, at the same point: after its last backward)."""
        def check(grad_norm: float | None, can_skip: bool = True) -> bool:
            from ringctl.dist import sum_over_ranks

            loss = sum_over_ranks({"loss": float(local_loss)})["loss"]
            ok = check_finite(self.guard.stage, self.step, self.guard.on_nonfinite, loss=loss, grad_norm=grad_norm,
                              can_skip=can_skip)
            if not ok:
                self.guard.skipped += 1
            return ok

        return check
