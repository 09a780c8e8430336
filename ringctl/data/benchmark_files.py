"""The benchmark presets' files: the copies shipped with ringctl (ringctl/data/benchmarks, package data; README.md
there gives each file's source, licence and sha256), or the files of the same names in $RINGCTL_BENCHMARKS_DIR.

A preset's name (math500, gsm8k, ...) names its file wherever a benchmark file is read: the data_filter's
decontaminate step, the demo source's contamination, and the evaluation (ringctl.eval.benchmarks adds each preset's
field mapping, prompt suffix and verifier domain over these names).
"""

from __future__ import annotations

import os
from pathlib import Path

ENV_BENCHMARKS_DIR = "RINGCTL_BENCHMARKS_DIR"
PRESET_FILES: dict[str, str] = {
    "math500": "math500.jsonl",
    "aime24": "aime24.jsonl",
    "aime25": "aime25.jsonl",
    "amc23": "amc23.jsonl",
    "gsm8k": "gsm8k.jsonl",
    "humaneval": "humaneval.jsonl.gz",
    "ifeval": "ifeval.jsonl",
}


def shipped_benchmarks_dir() -> Path:
    """The presets' files as shipped with ringctl (package data, in a built wheel too)."""
    return Path(__file__).resolve().parent / "benchmarks"


def default_benchmarks_dir() -> Path:
    """$RINGCTL_BENCHMARKS_DIR, else the shipped copies."""
    env = os.environ.get(ENV_BENCHMARKS_DIR)
    return Path(env) if env else shipped_benchmarks_dir()


def benchmark_file(name_or_path: str, benchmarks_dir: str | Path | None = None) -> Path:
    """A preset's name (math500, gsm8k, ...) -> its file in the benchmarks directory; anything else is a path."""
    if name_or_path in PRESET_FILES:
        return Path(benchmarks_dir or default_benchmarks_dir()) / PRESET_FILES[name_or_path]
    return Path(name_or_path)


def missing_preset_hint(path: Path) -> str:
    """What to do when a preset's file `path` does not exist."""
    if path.parent.resolve() == shipped_benchmarks_dir():
        return "the copy shipped with ringctl is missing: reinstall ringctl"
    return (f"set {ENV_BENCHMARKS_DIR} to a directory that holds {path.name}, or unset it (and benchmarks_dir) for "
            f"the copies shipped with ringctl")
