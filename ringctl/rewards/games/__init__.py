"""Logic games and arithmetic: each module has a seeded generator, a step-by-step solver and a verifier.

Module interface: ``generate(rng, difficulty) -> Task``, ``verify(response, reference, **meta) -> RewardResult``,
``check_reference(reference, **meta) -> (ok, reason)``. Difficulty 1 is sized for a character-level toy model:
short prompts and traces in lowercase ascii, digits and a few symbols.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

GAMES = ("arithmetic", "countdown", "sudoku", "maze", "arc")


@dataclass(frozen=True)
class Task:
    prompt: str
    answer: Any  # the reference the game's verifier takes
    trace: str  # the solver's step-by-step reasoning
    final: str  # what goes inside \boxed{} in a correct response

    def solution(self) -> str:
        return f"<think>\n{self.trace}\n</think>\nthe answer is \\boxed{{{self.final}}}"
