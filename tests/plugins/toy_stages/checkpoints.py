"""A source stage: exposes a directory of checkpoints (epoch-N/, as the SFT stage writes them) as its `checkpoints`
output (copied into the run), so that select_sft and evaluate can run without training one."""

from __future__ import annotations

import shutil
from typing import Literal

from ringctl.pipeline.context import Artifact
from ringctl.recipe.base import StageConfig

KIND = "toy_stages.checkpoints"
OUTPUTS = ("checkpoints",)


class Config(StageConfig):
    kind: Literal["toy_stages.checkpoints"] = "toy_stages.checkpoints"
    path: str


def run(cfg: Config, ctx) -> dict:
    out = ctx.outputs_dir / "checkpoints"
    if out.exists():
        shutil.rmtree(out)
    shutil.copytree(cfg.path, out)
    return {"checkpoints": Artifact(out)}
