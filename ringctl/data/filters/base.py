"""What every filter step shares: the config base class, the runtime filter, per-step drop statistics.

A step is two small pieces:
- a config model (``StepBase`` subclass, ``type: Literal["my_step"]``) that lives in the recipe, and
- the object its ``build()`` returns: a ``Filter`` whose ``check(record)`` gives a drop reason or None.

Steps see records one at a time (``process`` is a generator), so a chain of steps streams: memory holds
only what a step keeps on purpose (hashes for dedup, an n-gram index for decontamination).
"""

from __future__ import annotations

import re
import unicodedata
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from pydantic import Field

from ringctl.recipe.base import Strict

EXAMPLES_PER_REASON = 3
MAX_REASONS_PER_STEP = 50  # free-text reasons (e.g. from a verifier) beyond this are counted as "other"

_WS_RE = re.compile(r"\s+")


class StepConfigError(ValueError):
    """A step cannot start (missing benchmark file, verifier not installed): raised before any record is read."""


class StepBase(Strict):
    """Config of one filter step. Subclasses add ``type: Literal[...]`` and their knobs, and implement build()."""

    name: str | None = Field(None, pattern=r"^[A-Za-z0-9_\-]+$",
                             description="name used in the report and in metrics; default: the step type")

    @property
    def step_name(self) -> str:
        return self.name or self.type  # type: ignore[attr-defined]

    def build(self) -> Filter:  # pragma: no cover - every subclass implements it
        raise NotImplementedError

    def benchmark_files(self) -> list:
        """The benchmark files the step reads (decontaminate's BenchmarkFile list): the stage's external files."""
        return []


class Filter:
    """Runtime side of a step. Override ``check`` (one record -> drop reason or None), or ``process`` for steps
    that need to look at several records at once (batched model calls)."""

    def check(self, record: dict) -> str | None:
        raise NotImplementedError

    def process(self, records: Iterable[dict], stats: StepStats) -> Iterator[dict]:
        check = self.check
        for record in records:
            reason = check(record)
            if reason is None:
                stats.kept += 1
                yield record
            else:
                stats.drop(reason, record.get("id"))


@dataclass
class StepStats:
    """What one step saw, kept and dropped (by reason, with a few example ids per reason)."""

    name: str
    type: str
    kept: int = 0
    dropped_by_reason: Counter = field(default_factory=Counter)
    extra: dict = field(default_factory=dict)  # step-specific report data (e.g. a pass-rate histogram)
    examples: dict[str, list[str]] = field(default_factory=dict)

    @property
    def dropped(self) -> int:
        return sum(self.dropped_by_reason.values())

    @property
    def seen(self) -> int:
        return self.kept + self.dropped

    def drop(self, reason: str, record_id: Any) -> None:
        if reason not in self.dropped_by_reason and len(self.dropped_by_reason) >= MAX_REASONS_PER_STEP:
            reason = "other"
        self.dropped_by_reason[reason] += 1
        ids = self.examples.setdefault(reason, [])
        if len(ids) < EXAMPLES_PER_REASON:
            ids.append(str(record_id))

    def to_dict(self) -> dict:
        return {"name": self.name, "type": self.type, "seen": self.seen, "kept": self.kept,
                "dropped": self.dropped, "reasons": dict(self.dropped_by_reason.most_common()),
                "examples": self.examples, **({"extra": {k: dict(sorted(v.items())) if isinstance(v, Counter) else v
                                                         for k, v in self.extra.items()}} if self.extra else {})}


# -- text helpers shared by several steps -------------------------------------------------------------------

def normalize_text(text: str) -> str:
    """Unicode-compatible, case-folded, whitespace-collapsed text: what 'the same text' means for dedup."""
    return _WS_RE.sub(" ", unicodedata.normalize("NFKC", text).casefold()).strip()


def field_text(record: dict, name: str) -> str:
    """A record field as text ('' when missing); dict/list answers are flattened deterministically."""
    value = record.get(name)
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    if isinstance(value, dict):
        return " ".join(f"{k} {field_text(value, k)}" for k in sorted(value))
    if isinstance(value, (list, tuple)):
        return " ".join(field_text({"v": v}, "v") for v in value)
    return str(value)
