"""Exceptions and exit codes shared by the CLI, the recipe loader and the runner."""

from __future__ import annotations

import difflib
from dataclasses import asdict, dataclass

EXIT_OK = 0
EXIT_STAGE_FAILED = 1
EXIT_BAD_INPUT = 2
EXIT_INTERRUPTED = 130


def did_you_mean(word: str, candidates, cutoff: float = 0.6) -> str:
    """' (did you mean 'x'?)' for the candidate closest to a misspelt `word`, or '' when none is close."""
    match = difflib.get_close_matches(str(word), [str(c) for c in candidates], n=1, cutoff=cutoff)
    return f" (did you mean {match[0]!r}?)" if match else ""


@dataclass(frozen=True)
class Problem:
    """One validation problem, located in a file (or in the command-line overrides)."""

    file: str
    line: int | None
    column: int | None
    path: str
    message: str

    def __str__(self) -> str:
        where = self.file
        if self.line is not None:
            where += f":{self.line}"
            if self.column is not None:
                where += f":{self.column}"
        return f"{where}: {self.path}: {self.message}" if self.path else f"{where}: {self.message}"

    def to_json(self) -> dict:
        return asdict(self)


class RingctlError(Exception):
    """Base class; carries the exit code the CLI should use."""

    exit_code = EXIT_STAGE_FAILED


class BadInput(RingctlError):
    """Bad input from the user (unknown run id, bad flag value): exit code 2."""

    exit_code = EXIT_BAD_INPUT


class RecipeError(BadInput):
    """A recipe (or its overrides) failed validation; holds every problem found, not just the first."""

    def __init__(self, problems: list[Problem]):
        self.problems = list(problems)
        super().__init__("\n".join(str(p) for p in self.problems))


class StageFailed(RingctlError):
    exit_code = EXIT_STAGE_FAILED


class Interrupted(RingctlError):
    exit_code = EXIT_INTERRUPTED


class NonFiniteError(StageFailed):
    """A training stage met a non-finite loss or gradient norm under `on_nonfinite: stop` (ringctl.train.numerics)."""


class DiskFull(StageFailed):
    """The device filled up while a checkpoint or an output was written (ringctl.artifacts.disk_full_guard): the
    partial write is removed, what was there before is intact, and the message names the path and the space needed."""
