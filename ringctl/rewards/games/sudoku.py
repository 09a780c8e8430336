"""Sudoku (4x4 and 9x9): the boxed grid must be a valid solution that keeps every clue.

Grids are written row by row, digits only, rows joined by '/'; 0 marks an empty cell in the prompt.
"""

from __future__ import annotations

import math
import random
import re
from typing import Any

from ringctl.rewards.base import RewardResult, failed, passed, reference_and_answer
from ringctl.rewards.games import Task

Grid = list[list[int]]


def to_text(grid: Grid) -> str:
    return "/".join("".join(str(v) for v in row) for row in grid)


def parse_grid(text: Any) -> Grid:
    """'1234/3412/...' or rows on separate lines or a list of lists -> Grid. Raises ValueError."""
    if isinstance(text, list):
        return [[int(v) for v in row] for row in text]
    rows = [re.sub(r"[\s,|]", "", r) for r in re.split(r"[/\n;]|\\\\", str(text).strip().strip("[]"))]
    rows = [r.strip("[]") for r in rows if r.strip("[]")]
    if not rows or any(not r.isdigit() for r in rows):
        raise ValueError("a grid is rows of digits separated by '/'")
    return [[int(c) for c in r] for r in rows]


def _box(n: int) -> int:
    b = math.isqrt(n)
    if b * b != n:
        raise ValueError(f"size {n} is not a square")
    return b


def problems(grid: Grid, allow_zero: bool) -> list[str]:
    """Rule violations of a (partial when allow_zero) grid; empty when it is valid."""
    n = len(grid)
    if n not in (4, 9) or any(len(r) != n for r in grid):
        return [f"grid must be 4x4 or 9x9, got {n} rows of {sorted({len(r) for r in grid})}"]
    b = _box(n)
    units = [[(r, c) for c in range(n)] for r in range(n)] + [[(r, c) for r in range(n)] for c in range(n)]
    units += [[(br + r, bc + c) for r in range(b) for c in range(b)] for br in range(0, n, b) for bc in range(0, n, b)]
    out = []
    for unit in units:
        values = [grid[r][c] for r, c in unit]
        if any(not (0 if allow_zero else 1) <= v <= n for v in values):
            out.append(f"value out of range in {unit[0]}..{unit[-1]}")
        filled = [v for v in values if v]
        if len(filled) != len(set(filled)):
            out.append(f"repeated digit in unit starting at r{unit[0][0] + 1}c{unit[0][1] + 1}")
    return out


def _candidates(grid: Grid, r: int, c: int) -> list[int]:
    n, b = len(grid), _box(len(grid))
    seen = set(grid[r]) | {grid[i][c] for i in range(n)}
    br, bc = r - r % b, c - c % b
    seen |= {grid[br + i][bc + j] for i in range(b) for j in range(b)}
    return [v for v in range(1, n + 1) if v not in seen]


def solve(puzzle: Grid) -> tuple[Grid, list[str]] | None:
    """Fill the most constrained empty cell first; backtrack on dead ends. Returns (solution, steps)."""
    grid = [row[:] for row in puzzle]
    steps: list[str] = []

    def search() -> bool:
        empty = [(len(_candidates(grid, r, c)), r, c) for r in range(len(grid)) for c in range(len(grid))
                 if grid[r][c] == 0]
        if not empty:
            return True
        _, r, c = min(empty)
        for v in _candidates(grid, r, c):
            grid[r][c] = v
            steps.append(f"r{r + 1}c{c + 1}={v}")
            if search():
                return True
            steps.append(f"undo r{r + 1}c{c + 1}")
        grid[r][c] = 0
        return False

    return (grid, steps) if search() else None


def _random_solution(rng: random.Random, n: int) -> Grid:
    b = _box(n)
    base = [[(b * (r % b) + r // b + c) % n + 1 for c in range(n)] for r in range(n)]
    bands = rng.sample(range(b), b)
    rows = [band * b + r for band in bands for r in rng.sample(range(b), b)]
    stacks = rng.sample(range(b), b)
    cols = [st * b + c for st in stacks for c in rng.sample(range(b), b)]
    digits = rng.sample(range(1, n + 1), n)
    return [[digits[base[r][c] - 1] for c in cols] for r in rows]


def generate(rng: random.Random, difficulty: int = 1) -> Task:
    n, blanks = {1: (4, rng.randint(2, 4)), 2: (4, rng.randint(6, 9))}.get(difficulty, (9, rng.randint(30, 45)))
    solution = _random_solution(rng, n)
    puzzle = [row[:] for row in solution]
    for k in rng.sample(range(n * n), blanks):
        puzzle[k // n][k % n] = 0
    solved = solve(puzzle)
    assert solved is not None
    grid, steps = solved
    prompt = f"solve sudoku {n}x{n} 0 is empty\n" + "\n".join("".join(map(str, row)) for row in puzzle)
    return Task(prompt=prompt, answer={"puzzle": to_text(puzzle)}, trace="\n".join(steps), final=to_text(grid))


def _puzzle(reference: Any) -> Grid:
    if isinstance(reference, dict):
        reference = reference.get("puzzle")
    return parse_grid(reference)


def verify(response: str, reference: Any, **meta: Any) -> RewardResult:
    got = reference_and_answer(response, reference, _puzzle)
    if isinstance(got, RewardResult):
        return got
    puzzle, answer = got
    try:
        grid = parse_grid(answer)
    except ValueError as e:
        return failed(str(e), answer=answer)
    if len(grid) != len(puzzle) or any(len(r) != len(puzzle) for r in grid):
        return failed("grid size differs from the puzzle", answer=answer)
    bad = problems(grid, allow_zero=False)
    if bad:
        return failed(f"invalid grid: {bad[0]}", answer=answer)
    changed = [(r, c) for r, row in enumerate(puzzle) for c, v in enumerate(row) if v and grid[r][c] != v]
    if changed:
        return failed(f"clue r{changed[0][0] + 1}c{changed[0][1] + 1} changed", answer=answer)
    return passed(answer=answer)


def check_reference(reference: Any, **meta: Any) -> tuple[bool, str]:
    try:
        puzzle = _puzzle(reference)
    except (ValueError, TypeError) as e:
        return False, str(e)
    bad = problems(puzzle, allow_zero=True)
    if bad:
        return False, bad[0]
    if len(puzzle) == 4 and solve(puzzle) is None:
        return False, "no solution"
    return True, "ok"
