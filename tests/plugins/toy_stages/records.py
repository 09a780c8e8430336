"""A source stage: exposes a JSONL file of records as its `records` output (copied into the run)."""

from __future__ import annotations

import shutil
from typing import Literal

from ringctl.pipeline.context import Artifact
from ringctl.recipe.base import StageConfig

KIND = "toy_stages.records"
OUTPUTS = ("records",)


class Config(StageConfig):
    kind: Literal["toy_stages.records"] = "toy_stages.records"
    path: str

    def external_files(self) -> list[str]:
        return [self.path]


def run(cfg: Config, ctx) -> dict:
    out = ctx.outputs_dir / "records.jsonl"
    shutil.copyfile(cfg.path, out)
    return {"records": Artifact(out)}
