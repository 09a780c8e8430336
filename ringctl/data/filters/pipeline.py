"""Run the configured steps over a record stream and account for every record.

`FilterRun` holds the counts: records read per source, per-step seen/kept/dropped by reason, records per
output split. `check()` verifies that they add up (each step sees exactly what the previous one kept).
"""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field

from ringctl.data.filters.base import StepBase, StepStats
from ringctl.data.readers import BadRows


@dataclass
class FilterRun:
    sources: Counter = field(default_factory=Counter)   # source label -> records read
    steps: list[StepStats] = field(default_factory=list)
    splits: dict[str, int] = field(default_factory=dict)
    unmatched_dropped: int = 0   # kept by the steps but matching no split rule and no default split
    written_all: int = 0
    splits_configured: bool = True  # False: no split rules, every record goes to 'all' only
    started: float = field(default_factory=time.perf_counter)
    elapsed_s: float = 0.0
    bad_rows: BadRows = field(default_factory=lambda: BadRows())  # malformed rows skipped (on_bad_rows: skip)

    @property
    def read(self) -> int:
        return sum(self.sources.values())

    @property
    def kept(self) -> int:
        return self.steps[-1].kept if self.steps else self.read

    def finish(self) -> None:
        self.elapsed_s = time.perf_counter() - self.started

    def check(self) -> list[str]:
        """Inconsistencies in the counts ([] when every record is accounted for)."""
        problems = []
        expected = self.read
        for st in self.steps:
            if st.seen != expected:
                problems.append(f"step {st.name!r} saw {st.seen} records, the previous stage of the chain gave {expected}")
            expected = st.kept
        if self.written_all != expected:
            problems.append(f"'all' holds {self.written_all} records, the steps kept {expected}")
        return problems

    def to_dict(self) -> dict:
        return {
            "read": self.read,
            "kept": self.kept,
            "sources": dict(self.sources),
            "steps": [s.to_dict() for s in self.steps],
            "splits": dict(self.splits),
            "unmatched_dropped": self.unmatched_dropped,
            "bad_rows": self.bad_rows.to_dict(),
            "elapsed_s": round(self.elapsed_s, 3),
            "records_per_s": round(self.read / self.elapsed_s, 1) if self.elapsed_s > 0 else None,
        }

    def metrics(self) -> dict[str, float]:
        """Flat metrics for the tracker: filter/<step>/kept, filter/<step>/dropped, filter/split/<name>, ..."""
        m: dict[str, float] = {"filter/read": self.read, "filter/kept": self.kept,
                               "filter/unmatched_dropped": self.unmatched_dropped,
                               "filter/bad_rows": self.bad_rows.total}
        for st in self.steps:
            m[f"filter/{st.name}/kept"] = st.kept
            m[f"filter/{st.name}/dropped"] = st.dropped
        for name, n in self.splits.items():
            m[f"filter/split/{name}"] = n
        if self.elapsed_s > 0:
            m["filter/records_per_s"] = self.read / self.elapsed_s
        return m

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=False) + "\n"

    def to_markdown(self, title: str = "data_filter report") -> str:
        lines = [f"# {title}", "", f"read {self.read} records, kept {self.kept} "
                 f"({self.elapsed_s:.2f} s)", "", "| step | type | seen | kept | dropped | reasons |",
                 "|---|---|---:|---:|---:|---|"]
        for st in self.steps:
            reasons = ", ".join(f"{r}: {n}" for r, n in st.dropped_by_reason.most_common()) or "-"
            lines.append(f"| {st.name} | {st.type} | {st.seen} | {st.kept} | {st.dropped} | {reasons} |")
        lines += ["", "| source | records |", "|---|---:|"]
        lines += [f"| {s} | {n} |" for s, n in self.sources.items()]
        if self.splits_configured:
            lines += ["", "| split | records |", "|---|---:|"]
            lines += [f"| {s} | {n} |" for s, n in self.splits.items()]
        else:
            lines += ["", "no split rules: the kept records are in 'all' only"]
        if self.unmatched_dropped and self.splits_configured:
            lines += ["", f"{self.unmatched_dropped} kept records matched no split rule and were not written to a split"]
        if self.bad_rows.total:
            lines += ["", f"{self.bad_rows.total} malformed rows skipped (on_bad_rows: skip), not counted as read:", ""]
            lines += [f"- {f}: {n}" for f, n in self.bad_rows.by_file.items()]
            lines += ["", "first ones:", ""] + [f"- `{e}`" for e in self.bad_rows.examples]
        return "\n".join(lines) + "\n"

    def rich_table(self, title: str = "data_filter"):
        from rich.table import Table

        table = Table(title=f"{title}: read {self.read}, kept {self.kept}")
        for col, justify in (("step", "left"), ("type", "left"), ("seen", "right"), ("kept", "right"),
                             ("dropped", "right"), ("reasons", "left")):
            table.add_column(col, justify=justify, overflow="fold")  # type: ignore[arg-type]
        for st in self.steps:
            reasons = ", ".join(f"{r}: {n}" for r, n in st.dropped_by_reason.most_common()) or "-"
            table.add_row(st.name, st.type, str(st.seen), str(st.kept), str(st.dropped), reasons)
        splits = ", ".join(f"{k}: {v}" for k, v in self.splits.items()) if self.splits_configured else ""
        table.caption = f"splits: {splits or '-'}" + (
            f"; in no split: {self.unmatched_dropped}" if self.unmatched_dropped and self.splits_configured else "") + (
            f"; malformed rows skipped: {self.bad_rows.total} (report.json: bad_rows)" if self.bad_rows.total else "")
        return table


def step_names(steps: Sequence[StepBase]) -> list[str]:
    return [s.step_name for s in steps]


def apply_steps(records: Iterable[dict], steps: Sequence[StepBase], run: FilterRun) -> Iterator[dict]:
    """Chain the steps lazily over `records`. Every step is built first, so a misconfigured step (missing
    benchmark file, verifier not importable) fails before any record is read."""
    filters = [s.build() for s in steps]
    for flt in filters:  # rows skipped in the steps' own files (benchmarks)
        run.bad_rows.merge(getattr(flt, "bad_rows", None))
    stream: Iterable[dict] = records
    for cfg, flt in zip(steps, filters, strict=True):
        stats = StepStats(name=cfg.step_name, type=cfg.type)  # type: ignore[attr-defined]
        run.steps.append(stats)
        stream = flt.process(stream, stats)
    return iter(stream)
