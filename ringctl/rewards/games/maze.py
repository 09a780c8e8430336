"""Maze: a path of u/d/l/r moves (either case) from s to g that stays on open cells ('0'; '1' is a wall)."""

from __future__ import annotations

import random
import re
from collections import deque
from typing import Any

from ringctl.rewards.base import RewardResult, failed, passed, reference_and_answer
from ringctl.rewards.games import Task

MOVES = {"u": (-1, 0), "d": (1, 0), "l": (0, -1), "r": (0, 1)}


def _grid(reference: Any) -> list[str]:
    rows = reference.get("grid") if isinstance(reference, dict) else reference
    if isinstance(rows, str):
        rows = rows.replace("/", "\n").split()
    if not isinstance(rows, list) or not rows or any(not isinstance(r, str) for r in rows):
        raise ValueError("reference must be {'grid': [row strings]}")
    if len({len(r) for r in rows}) != 1 or set("".join(rows)) - set("01sg"):
        raise ValueError("grid rows must be equally long and use only 0 1 s g")
    text = "".join(rows)
    if text.count("s") != 1 or text.count("g") != 1:
        raise ValueError("grid needs exactly one s and one g")
    return rows


def _find(rows: list[str], ch: str) -> tuple[int, int]:
    r = next(i for i, row in enumerate(rows) if ch in row)
    return r, rows[r].index(ch)


def shortest_path(rows: list[str]) -> str | None:
    start, goal = _find(rows, "s"), _find(rows, "g")
    prev: dict[tuple[int, int], tuple[tuple[int, int], str] | None] = {start: None}
    queue = deque([start])
    while queue:
        cell = queue.popleft()
        if cell == goal:
            moves = []
            while prev[cell] is not None:
                cell, m = prev[cell]
                moves.append(m)
            return "".join(reversed(moves))
        for m, (dr, dc) in MOVES.items():
            r, c = cell[0] + dr, cell[1] + dc
            if 0 <= r < len(rows) and 0 <= c < len(rows[0]) and rows[r][c] != "1" and (r, c) not in prev:
                prev[(r, c)] = (cell, m)
                queue.append((r, c))
    return None


def generate(rng: random.Random, difficulty: int = 1) -> Task:
    h, w = {1: (3, 3), 2: (4, 5)}.get(difficulty, (6, 8))
    while True:
        cells = [["1" if rng.random() < 0.3 else "0" for _ in range(w)] for _ in range(h)]
        s, g = rng.sample(range(h * w), 2)
        cells[s // w][s % w], cells[g // w][g % w] = "s", "g"
        rows = ["".join(r) for r in cells]
        path = shortest_path(rows)
        if path and len(path) >= min(2, difficulty + 1):
            break
    r, c = _find(rows, "s")
    steps = [f"start {r} {c}"]
    for m in path:
        r, c = r + MOVES[m][0], c + MOVES[m][1]
        steps.append(f"{m} {r} {c}")
    steps.append("goal")
    prompt = "maze from s to g 1 is wall\n" + "\n".join(rows)
    return Task(prompt=prompt, answer={"grid": rows}, trace="\n".join(steps), final=path)


def verify(response: str, reference: Any, **meta: Any) -> RewardResult:
    got = reference_and_answer(response, reference, _grid)
    if isinstance(got, RewardResult):
        return got
    rows, answer = got
    moves = re.sub(r"[\s,]", "", answer).lower()
    if not moves or set(moves) - set(MOVES):
        return failed("the path must be a string of u/d/l/r moves", answer=answer)
    r, c = _find(rows, "s")
    for i, m in enumerate(moves):
        r, c = r + MOVES[m][0], c + MOVES[m][1]
        if not (0 <= r < len(rows) and 0 <= c < len(rows[0])):
            return failed(f"move {i + 1} leaves the maze", answer=answer)
        if rows[r][c] == "1":
            return failed(f"move {i + 1} hits a wall", answer=answer)
    if rows[r][c] != "g":
        return failed("the path does not end at g", answer=answer)
    return passed(answer=answer)


def check_reference(reference: Any, **meta: Any) -> tuple[bool, str]:
    try:
        rows = _grid(reference)
    except (ValueError, TypeError) as e:
        return False, str(e)
    return (True, "ok") if shortest_path(rows) is not None else (False, "g cannot be reached from s")
