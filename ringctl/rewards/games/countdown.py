"""Countdown: reach the target with + - * / using each given number at most once; \\boxed{} holds the expression."""

from __future__ import annotations

import ast
import random
from collections import Counter
from fractions import Fraction
from functools import lru_cache
from typing import Any

from ringctl.rewards.base import RewardResult, failed, passed, reference_and_answer
from ringctl.rewards.games import Task

MAX_SOLVE_NUMBERS = 5  # exhaustive search beyond this is too slow for reference checks
_OPS = {ast.Add: lambda a, b: a + b, ast.Sub: lambda a, b: a - b, ast.Mult: lambda a, b: a * b,
        ast.Div: lambda a, b: a / b}


def evaluate_expression(expression: str) -> tuple[Fraction, list[int]]:
    """Exact value of an arithmetic expression over integers and the integers it uses. Raises ValueError."""
    text = expression.replace("\\times", "*").replace("\\cdot", "*").replace("\\div", "/").replace("×", "*")
    text = text.replace("÷", "/").replace("\\left", "").replace("\\right", "")
    if "=" in text:  # "5+8=13": the expression is the left side
        text = text.split("=", 1)[0]
    try:
        tree = ast.parse(text.strip(), mode="eval")
    except SyntaxError as e:
        raise ValueError(f"not an expression: {expression!r}") from e
    used: list[int] = []

    def walk(node: ast.AST) -> Fraction:
        if isinstance(node, ast.Constant) and type(node.value) is int:
            used.append(node.value)
            return Fraction(node.value)
        if isinstance(node, ast.BinOp) and type(node.op) in _OPS:
            left, right = walk(node.left), walk(node.right)
            if isinstance(node.op, ast.Div) and right == 0:
                raise ValueError("division by zero")
            return _OPS[type(node.op)](left, right)
        raise ValueError(f"only integers, + - * / and parentheses are allowed, found {type(node).__name__}")

    return walk(tree.body), used


@lru_cache(maxsize=4096)
def _solve(numbers: tuple[Fraction, ...], target: Fraction) -> tuple[str, ...] | None:
    """Steps ("a+b=c", ...) combining pairs until the target appears, or None. Classic pairwise search."""
    if target in numbers:
        return ()
    for i in range(len(numbers)):
        for j in range(len(numbers)):
            if i == j:
                continue
            a, b = numbers[i], numbers[j]
            rest = tuple(n for k, n in enumerate(numbers) if k not in (i, j))
            candidates = [("+", a + b), ("*", a * b)] if i < j else []
            if a > b:
                candidates.append(("-", a - b))
            if b != 0 and b != 1 and a % b == 0:
                candidates.append(("/", a / b))
            for op, value in candidates:
                steps = _solve(tuple(sorted(rest + (value,))), target)
                if steps is not None:
                    return (f"{a}{op}{b}={value}",) + steps
    return None


def solve(numbers: list[int], target: int) -> list[str] | None:
    steps = _solve(tuple(sorted(Fraction(n) for n in numbers)), Fraction(target))
    return list(steps) if steps is not None else None


def generate(rng: random.Random, difficulty: int = 1) -> Task:
    count, top = {1: (3, 9), 2: (4, 20)}.get(difficulty, (5, 50))
    while True:
        numbers = [rng.randint(1, top) for _ in range(count)]
        use = rng.sample(range(count), rng.randint(2, count))
        expr, value, steps = str(numbers[use[0]]), numbers[use[0]], []
        for k in use[1:]:
            n = numbers[k]
            op = rng.choice("+-*" if difficulty >= 2 else "+-*+")
            if op == "-" and n > value:
                expr, value, step = f"{n}-({expr})" if "+" in expr or "-" in expr else f"{n}-{expr}", n - value, \
                    f"{n}-{value}={n - value}"
            else:
                new = {"+": value + n, "-": value - n, "*": value * n}[op]
                step = f"{value}{op}{n}={new}"
                left = f"({expr})" if op == "*" and ("+" in expr or "-" in expr) else expr
                expr, value = f"{left}{op}{n}", new
            steps.append(step)
        if 1 <= value <= (20 if difficulty <= 1 else 100 if difficulty == 2 else 999) and value not in numbers:
            break
    got, used = evaluate_expression(expr)
    assert got == value and not Counter(used) - Counter(numbers), (expr, value, numbers)
    prompt = f"use {' '.join(map(str, numbers))} to make {value}"
    return Task(prompt=prompt, answer={"numbers": numbers, "target": value}, trace="\n".join(steps), final=expr)


def _reference(reference: Any) -> tuple[list[int], int]:
    if not isinstance(reference, dict) or "numbers" not in reference or "target" not in reference:
        raise ValueError("reference must be {'numbers': [...], 'target': int}")
    numbers, target = [int(n) for n in reference["numbers"]], int(reference["target"])
    return numbers, target


def verify(response: str, reference: Any, **meta: Any) -> RewardResult:
    got = reference_and_answer(response, reference, _reference)
    if isinstance(got, RewardResult):
        return got
    (numbers, target), answer = got
    try:
        value, used = evaluate_expression(answer)
    except (ValueError, RecursionError) as e:
        return failed(f"unreadable expression: {e}", answer=answer)
    extra = Counter(used) - Counter(numbers)
    if extra:
        return failed(f"uses numbers not given (or too often): {sorted(extra.elements())}", answer=answer)
    if value != target:
        return failed(f"expression equals {value}, not {target}", answer=answer)
    return passed(answer=answer)


def check_reference(reference: Any, **meta: Any) -> tuple[bool, str]:
    try:
        numbers, target = _reference(reference)
    except (ValueError, TypeError) as e:
        return False, str(e)
    if not numbers:
        return False, "no numbers"
    if len(numbers) <= MAX_SOLVE_NUMBERS and solve(numbers, target) is None:
        return False, "target cannot be reached with these numbers"
    return True, "ok"
