"""Filter steps for the data_filter stage, as one discriminated union on `type`.

Adding a step = one small StepBase subclass (with `type: Literal["x"]` and `build()`), plus one entry in
`STEP_TYPES` below. Steps run in recipe order; see `pipeline.apply_steps`.

    steps:
      - {type: exact_dedup}
      - {type: near_dedup, threshold: 0.8, num_perm: 128}
      - {type: decontaminate, benchmarks: [.../math500.jsonl], n: 13, threshold: 0.5}
"""

from __future__ import annotations

from typing import Annotated, Union

from pydantic import Field

from ringctl.data.filters.base import Filter, StepBase, StepConfigError, StepStats, normalize_text
from ringctl.data.filters.decontam import BenchmarkFile, Decontaminate
from ringctl.data.filters.dedup import ExactDedup, NearDedup
from ringctl.data.filters.difficulty import Difficulty
from ringctl.data.filters.formats import GuessableFormats, guessable_kind
from ringctl.data.filters.quality import Characters, Length, RequireFields
from ringctl.data.filters.splits import SplitRule, assign_splits
from ringctl.data.filters.verify import VerifyAnswers

STEP_TYPES = (
    RequireFields,
    Characters,
    Length,
    ExactDedup,
    NearDedup,
    GuessableFormats,
    Decontaminate,
    VerifyAnswers,
    Difficulty,
)

StepConfig = Annotated[Union[STEP_TYPES], Field(discriminator="type")]  # noqa: UP007

__all__ = [
    "STEP_TYPES", "StepConfig", "StepBase", "Filter", "StepStats", "StepConfigError", "normalize_text",
    "RequireFields", "Characters", "Length", "ExactDedup", "NearDedup", "GuessableFormats", "guessable_kind",
    "Decontaminate", "BenchmarkFile", "VerifyAnswers", "Difficulty", "SplitRule", "assign_splits",
]

from ringctl.data.filters.pipeline import FilterRun, apply_steps  # noqa: E402

__all__ += ["FilterRun", "apply_steps"]
