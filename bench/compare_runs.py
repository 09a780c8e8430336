"""Compare two runs' metrics exactly, stage by stage and step by step (timing metrics excluded): the check that a
refactor changed no computation. Exits 1 when any value differs.

    python bench/compare_runs.py runs/<run-a> runs/<run-b>      # e.g. the tiny demo before and after a change
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path


def _timing(name: str) -> bool:
    return name.startswith(("time/", "throughput/")) or name.endswith("_per_s")


def _load(path: Path) -> dict:
    values = {}
    for line in path.read_text().splitlines():
        row = json.loads(line)
        step = row.pop("step", None)
        values.update({(step, k): v for k, v in row.items() if not _timing(k)})
    return values


def _same(a, b) -> bool:
    return a == b or (isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b))


def main() -> int:
    a, b = (Path(p) for p in sys.argv[1:3])
    differing = 0
    for stage in sorted(p.name for p in a.iterdir() if (p / "metrics.jsonl").is_file()):
        other = b / stage / "metrics.jsonl"
        ma, mb = _load(a / stage / "metrics.jsonl"), _load(other) if other.is_file() else {}
        diffs = [(k, ma.get(k), mb.get(k)) for k in sorted(ma.keys() | mb.keys(), key=str)
                 if not _same(ma.get(k), mb.get(k))]
        steps = len({k[0] for k in ma.keys() | mb.keys()})
        print(json.dumps({"stage": stage, "values": len(ma.keys() | mb.keys()), "steps": steps,
                          "differ": len(diffs), "first": [list(map(str, d)) for d in diffs[:3]]}))
        differing += len(diffs)
    return 1 if differing else 0


if __name__ == "__main__":
    sys.exit(main())
