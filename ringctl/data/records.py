"""The one normalised record schema every reader produces and every stage consumes (JSONL on disk).

    {"id": str, "prompt": str, "answer": <reference: str | dict | list>, "domain": str, "source": str,
     "solution": str | None  (worked solution / long chain of thought, used by SFT),
     "metadata": dict}

Domains used by the rewards registry: math, code, countdown, sudoku, maze, arc, arithmetic, ifeval, ...
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, TypedDict

FIELDS = ("id", "prompt", "answer", "domain", "source", "solution", "metadata")


class Record(TypedDict, total=False):
    id: str
    prompt: str
    answer: Any
    domain: str
    source: str
    solution: str | None
    metadata: dict


def make_record(*, id: str, prompt: str, answer: Any = None, domain: str = "unknown", source: str = "unknown",
                solution: str | None = None, metadata: dict | None = None) -> Record:
    return Record(id=str(id), prompt=prompt, answer=answer, domain=domain, source=source,
                  solution=solution, metadata=dict(metadata or {}))


def iter_jsonl(path: Path) -> Iterator[dict]:
    with open(path, encoding="utf-8") as f:
        for line in f:
            if line.strip():
                yield json.loads(line)


def write_jsonl(path: Path, records: Iterable[dict]) -> int:
    """Write records to `path` (not atomic by itself: write inside an atomic_dir). Returns the count."""
    n = 0
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        for r in records:
            f.write(json.dumps(r, ensure_ascii=False) + "\n")
            n += 1
    return n
