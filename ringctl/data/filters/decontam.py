"""Decontamination: drop training records that share too many word n-grams with a benchmark item.

Score of a record against a benchmark item = the fraction of the item's n-grams that occur in the record.
A record is contaminated when its best score reaches `threshold`. Scoring against the benchmark item (not the
record) means that a benchmark problem pasted into a longer text, or reworded in a few places, still scores high.
Items shorter than n words count as one n-gram of all their words.
"""

from __future__ import annotations

import os
import re
from collections import Counter
from pathlib import Path
from typing import Literal

from pydantic import Field

from ringctl.data.filters.base import Filter, StepBase, StepConfigError, field_text
from ringctl.recipe.base import Strict

_WORD_RE = re.compile(r"\w+")
BENCHMARK_TEXT_FIELDS = ("problem", "question", "prompt", "text")


def words(text: str) -> list[str]:
    return _WORD_RE.findall(text.casefold())


def ngram_hashes(text: str, n: int) -> set[int]:
    w = words(text)
    if not w:
        return set()
    if len(w) < n:
        return {hash(" ".join(w))}
    return {hash(" ".join(w[i:i + n])) for i in range(len(w) - n + 1)}


class BenchmarkFile(Strict):
    path: str = Field(..., description="a benchmark preset (math500, aime24, aime25, amc23, gsm8k, humaneval, "
                                       "ifeval: the copies shipped with ringctl, or $RINGCTL_BENCHMARKS_DIR) or a "
                                       "file")
    field: str | None = Field(None, description=f"text field; default: the first of {BENCHMARK_TEXT_FIELDS}")
    name: str | None = Field(None, description="name in drop reasons; default: the file name without suffixes")
    format: Literal["jsonl", "parquet", "hf_disk"] | None = None

    def file(self) -> Path:
        from ringctl.data.benchmark_files import benchmark_file

        return benchmark_file(self.path)


class Decontaminate(StepBase):
    """Drop records whose text overlaps a benchmark item (word n-grams); every benchmark file must exist."""

    type: Literal["decontaminate"] = "decontaminate"
    benchmarks: list[str | BenchmarkFile] = Field(..., min_length=1, description="benchmark presets (math500, gsm8k, "
                                                  "...) or files (paths or objects)")
    n: int = Field(13, ge=1, le=64, description="n-gram length in words")
    threshold: float = Field(0.5, gt=0.0, le=1.0, description="fraction of a benchmark item's n-grams")
    fields: list[Literal["prompt", "answer", "solution"]] = Field(["prompt"], min_length=1)
    on_bad_rows: Literal["error", "skip"] | None = Field(None, description="malformed benchmark rows; default: "
                                                         "the data_filter stage's on_bad_rows")

    def benchmark_files(self) -> list[BenchmarkFile]:
        return [BenchmarkFile(path=b) if isinstance(b, str) else b for b in self.benchmarks]

    def build(self) -> Filter:
        return _DecontaminationFilter(self, BenchmarkIndex.load(self.benchmark_files(), self.n,
                                                                step=self.step_name, on_bad_rows=self.on_bad_rows or "error"))


def _missing(named: str, path: Path) -> str:
    from ringctl.data.benchmark_files import PRESET_FILES, missing_preset_hint

    if named in PRESET_FILES:
        return f"benchmark {named!r}: file {path} not found; {missing_preset_hint(path)}"
    return (f"benchmark file {named!r} not found (absolute: {path.absolute()}, cwd: {os.getcwd()}); fix the path or "
            f"name a preset: {', '.join(PRESET_FILES)}")


class BenchmarkIndex:
    """n-gram hash -> benchmark items containing it, plus each item's n-gram count and name."""

    def __init__(self, n: int):
        self.n = n
        self.postings: dict[int, list[int]] = {}
        self.item_sizes: list[int] = []
        self.item_names: list[str] = []
        self.bad_rows = None  # BadRows of the files loaded

    def add(self, text: str, name: str) -> None:
        grams = ngram_hashes(text, self.n)
        if not grams:
            return
        item = len(self.item_sizes)
        self.item_sizes.append(len(grams))
        self.item_names.append(name)
        for g in grams:
            self.postings.setdefault(g, []).append(item)

    @classmethod
    def load(cls, files: list[BenchmarkFile], n: int, step: str = "decontaminate",
             on_bad_rows: str = "error") -> BenchmarkIndex:
        from ringctl.data.readers import BadRows, infer_format, iter_numbered_rows

        index = cls(n)
        index.bad_rows = BadRows(on_bad_rows)
        for bf in files:
            path = bf.file()
            if not path.exists():
                raise StepConfigError(f"step {step!r}: {_missing(bf.path, path)}")
            name = bf.name or path.name.split(".")[0]
            fmt = bf.format or infer_format(path)
            before = len(index.item_sizes)
            for i, (where, row) in enumerate(iter_numbered_rows(path, fmt, bad=index.bad_rows)):
                field = bf.field or next((f for f in BENCHMARK_TEXT_FIELDS if row.get(f)), None)
                if field is None or field not in row:
                    index.bad_rows.found(path, where, f"no text field {bf.field or BENCHMARK_TEXT_FIELDS} "
                                                      f"(step {step!r}); columns: {sorted(row)[:20]}")
                    continue
                if not isinstance(row[field], str):
                    index.bad_rows.found(path, where, f"text field {field!r} must be text, got "
                                                      f"{type(row[field]).__name__}")
                    continue
                index.add(row[field], f"{name}#{i}")
            if len(index.item_sizes) == before:
                raise StepConfigError(f"step {step!r}: benchmark file {str(path)!r} has no items")
        return index

    def best_match(self, text: str) -> tuple[float, int | None]:
        hits: Counter = Counter()
        postings = self.postings
        for g in ngram_hashes(text, self.n):
            items = postings.get(g)
            if items:
                hits.update(items)
        best, best_item = 0.0, None
        for item, count in hits.items():
            score = count / self.item_sizes[item]
            if score > best:
                best, best_item = score, item
        return best, best_item


class _DecontaminationFilter(Filter):
    def __init__(self, cfg: Decontaminate, index: BenchmarkIndex):
        self.cfg = cfg
        self.index = index
        self.bad_rows = index.bad_rows  # counted in the filter report

    def check(self, record: dict) -> str | None:
        text = " ".join(field_text(record, f) for f in self.cfg.fields)
        score, item = self.index.best_match(text)
        if item is not None and score >= self.cfg.threshold:
            return f"contaminated:{self.index.item_names[item].split('#')[0]}"
        return None
