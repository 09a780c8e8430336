"""Arithmetic: small expressions and one- or two-step word problems; the answer is a number in \\boxed{}."""

from __future__ import annotations

import random
import re
from fractions import Fraction
from typing import Any

from ringctl.rewards.base import RewardResult, failed, final_boxed, passed
from ringctl.rewards.games import Task

NAMES = ("tom", "ann", "bob", "eva", "sam", "lia", "max", "zoe")
THINGS = ("apples", "books", "coins", "cards", "pens", "eggs", "cups", "stones")
_NUMBER = re.compile(r"^[+-]?(\d+(\.\d+)?|\d+/\d+)$")


def parse_number(text: str) -> Fraction | None:
    s = text.strip().replace(",", "").replace(" ", "").replace("\\!", "")
    s = re.sub(r"^\\text\{(.*)\}$", r"\1", s)
    m = re.fullmatch(r"\\d?frac\{([+-]?\d+)\}\{(\d+)\}", s)
    if m:
        s = f"{m[1]}/{m[2]}"
    if not _NUMBER.match(s):
        return None
    try:
        return Fraction(s)
    except (ValueError, ZeroDivisionError):
        return None


def _expression(rng: random.Random, difficulty: int) -> tuple[str, list[str], int]:
    """A random expression, the trace of its evaluation (one line per operation) and its value."""
    top = 9 if difficulty <= 1 else 20 if difficulty == 2 else 99
    a, b = rng.randint(1, top), rng.randint(1, top)
    # difficulty 1 is sized for the tiny default (a 1.8M-parameter character model): addition and subtraction of
    # digits only, which it learns within the demo's SFT budget; the 81 products of the multiplication table it
    # does not (measured: about 35% greedy accuracy after 8k samples with them, see the README)
    op = rng.choice("+-" if difficulty <= 1 else "+-*")
    if op == "-" and b > a:
        a, b = b, a
    if op == "*" and difficulty <= 1:
        b = rng.randint(1, 9)
    value = {"+": a + b, "-": a - b, "*": a * b}[op]
    expr, steps = f"{a}{op}{b}", [f"{a}{op}{b}={value}"]
    for _ in range(max(0, difficulty - 1)):
        c = rng.randint(1, 9 if difficulty <= 2 else 20)
        op2 = rng.choice("+-*")
        if op2 == "-" and c > value:
            op2 = "+"
        new = {"+": value + c, "-": value - c, "*": value * c}[op2]
        expr = f"({expr}){op2}{c}"
        steps.append(f"{value}{op2}{c}={new}")
        value = new
    return expr, steps, value


def _word_problem(rng: random.Random, difficulty: int) -> tuple[str, list[str], int]:
    name, thing = rng.choice(NAMES), rng.choice(THINGS)
    a = rng.randint(2, 9 if difficulty <= 1 else 30)
    b = rng.randint(1, a - 1)
    if rng.random() < 0.5:
        prompt = f"{name} has {a} {thing} and gets {b} more how many now"
        steps, value = [f"{a}+{b}={a + b}"], a + b
    else:
        prompt = f"{name} has {a} {thing} and gives away {b} how many left"
        steps, value = [f"{a}-{b}={a - b}"], a - b
    if difficulty >= 2:
        c = rng.randint(2, 5)
        prompt = prompt.replace(" how many", f" then each is split into {c} parts how many parts")
        steps.append(f"{value}*{c}={value * c}")
        value *= c
    return prompt, steps, value


# Several phrasings of one expression: at difficulty 1 there are only ~200 distinct expressions, and a pipeline
# that deduplicates prompts (as the tiny recipe does) would otherwise keep each fact once. With the phrasings the
# model sees every fact many times in different prompts, and RL / held-out prompts can be new prompts (after
# deduplication against the SFT data) over the same facts.
EXPRESSION_PROMPTS = ("compute {e}", "what is {e}", "calculate {e}", "find {e}", "evaluate {e}", "work out {e}",
                      "{e} = ?", "solve {e}")


def generate(rng: random.Random, difficulty: int = 1) -> Task:
    if rng.random() < 0.25:
        prompt, steps, value = _word_problem(rng, difficulty)
    else:
        expr, steps, value = _expression(rng, difficulty)
        shown = re.sub(r"([+\-*])", r" \1 ", expr) if rng.random() < 0.5 else expr
        prompt = rng.choice(EXPRESSION_PROMPTS).format(e=shown)
    return Task(prompt=prompt, answer=str(value), trace="\n".join(steps), final=str(value))


def verify(response: str, reference: Any, **meta: Any) -> RewardResult:
    expected = parse_number(str(reference))
    if expected is None:
        return failed("reference is not a number")
    answer, why = final_boxed(response)
    if answer is None:
        return failed(why)
    got = parse_number(answer)
    if got is None:
        return failed("boxed answer is not a number", answer=answer)
    return passed(answer=answer) if got == expected else failed("wrong answer", answer=answer)


def check_reference(reference: Any, **meta: Any) -> tuple[bool, str]:
    return (True, "ok") if parse_number(str(reference)) is not None else (False, "reference is not a number")
