"""ARC-style grid puzzles: infer a transformation from example pairs, apply it to the test grid; exact match.

Grids are digit rows joined by '/' (e.g. 12/34), as in the sudoku domain.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Any

from ringctl.rewards.base import RewardResult, failed, passed, reference_and_answer
from ringctl.rewards.games import Task
from ringctl.rewards.games.sudoku import parse_grid, to_text

Grid = list[list[int]]


def _flip_lr(g: Grid) -> Grid:
    return [row[::-1] for row in g]


def _flip_ud(g: Grid) -> Grid:
    return [row[:] for row in g[::-1]]


def _transpose(g: Grid) -> Grid:
    return [list(col) for col in zip(*g, strict=True)]


def _rotate(g: Grid) -> Grid:  # 90 degrees clockwise
    return [list(col) for col in zip(*g[::-1], strict=True)]


def _add_one(g: Grid) -> Grid:
    return [[(v + 1) % 10 for v in row] for row in g]


def _double_width(g: Grid) -> Grid:
    return [[v for v in row for _ in range(2)] for row in g]


# name (as the solver trace states it) -> transformation; the harder ones join at higher difficulty
RULES: dict[str, tuple[int, Callable[[Grid], Grid]]] = {
    "flip left right": (1, _flip_lr), "flip up down": (1, _flip_ud), "add one": (1, _add_one),
    "transpose": (2, _transpose), "rotate right": (2, _rotate), "double width": (3, _double_width),
}


def generate(rng: random.Random, difficulty: int = 1) -> Task:
    size, n_examples = {1: (2, 1), 2: (3, 2)}.get(difficulty, (rng.randint(3, 5), 2))
    rules = {name: f for name, (level, f) in RULES.items() if level <= difficulty}
    colours = 5 if difficulty <= 1 else 10
    while True:
        grids = [[[rng.randrange(colours) for _ in range(size)] for _ in range(size)] for _ in range(n_examples + 1)]
        name = rng.choice(sorted(rules))
        rule = rules[name]
        examples, test = grids[:-1], grids[-1]
        # the examples must single out the rule: any other rule that fits them must agree on the test grid
        fits = [f for f in rules.values() if all(f(e) == rule(e) for e in examples)]
        if all(f(test) == rule(test) for f in fits) and rule(test) != test:
            break
    lines = [f"{to_text(e)} to {to_text(rule(e))}" for e in examples]
    prompt = "grid rule\n" + "\n".join(lines) + f"\nsolve {to_text(test)}"
    out = rule(test)
    trace = f"rule {name}\n" + "\n".join(f"{''.join(map(str, a))} to {''.join(map(str, b))}"
                                         for a, b in zip(test, out, strict=False))
    if len(test) != len(out) or name in ("transpose", "rotate right"):
        trace = f"rule {name}\n{to_text(test)} to {to_text(out)}"
    return Task(prompt=prompt, answer={"grid": out}, trace=trace, final=to_text(out))


def _expected(reference: Any) -> Grid:
    if isinstance(reference, dict):
        reference = reference.get("grid")
    grid = parse_grid(reference)
    if not grid or len({len(r) for r in grid}) != 1:
        raise ValueError("reference grid must be a non-empty rectangle")
    return grid


def verify(response: str, reference: Any, **meta: Any) -> RewardResult:
    got = reference_and_answer(response, reference, _expected)
    if isinstance(got, RewardResult):
        return got
    expected, answer = got
    try:
        grid = parse_grid(answer)
    except ValueError as e:
        return failed(str(e), answer=answer)
    return passed(answer=answer) if grid == expected else failed("grid differs", answer=answer)


def check_reference(reference: Any, **meta: Any) -> tuple[bool, str]:
    try:
        _expected(reference)
    except (ValueError, TypeError) as e:
        return False, str(e)
    return True, "ok"
