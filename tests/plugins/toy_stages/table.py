"""A stage that leaves a table for the terminal (ringctl.display.write_summary), `columns` columns of `cell`."""

from __future__ import annotations

from typing import Literal

from ringctl.display import TableDoc, write_summary
from ringctl.pipeline.context import Artifact
from ringctl.recipe.base import StageConfig

KIND = "toy_stages.table"
OUTPUTS = ("summary",)


class Config(StageConfig):
    kind: Literal["toy_stages.table"] = "toy_stages.table"
    columns: int = 6
    cell: str = "checkpoint-with-a-long-name"


def run(cfg: Config, ctx) -> dict:
    doc = TableDoc(title="a table wider than 80 columns", columns=[("row", "left")] + [
        (f"{cfg.cell}-{i}", "right") for i in range(cfg.columns)],
                   rows=[[f"r{r}", *(f"{r}.{i}" for i in range(cfg.columns))] for r in range(3)],
                   notes=["a note under the table"])
    out = ctx.outputs_dir / "table.txt"
    out.write_text(write_summary(ctx.stage_dir, doc), encoding="utf-8")
    return {"summary": Artifact(out)}
