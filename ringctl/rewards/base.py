"""What every verifier returns, and the answer extraction the \\boxed{} domains share.

A verifier is a plain function ``verify(response, reference, **meta) -> RewardResult``. Answers are read only
from the part of a response after the last ``</think>`` (the reasoning may box intermediate results); a
response that opens ``<think>`` and never closes it was cut off and has no answer.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

BOXED_COMMANDS = ("\\boxed", "\\fbox")


@dataclass
class RewardResult:
    score: float
    reason: str
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.score = float(min(1.0, max(0.0, self.score)))


def passed(reason: str = "correct", **meta: Any) -> RewardResult:
    return RewardResult(1.0, reason, dict(meta))


def failed(reason: str, **meta: Any) -> RewardResult:
    return RewardResult(0.0, reason, dict(meta))


def answer_region(response: str) -> str | None:
    """The text after the last </think>; None when a <think> block was opened and never closed."""
    if "</think>" in response:
        return response.rsplit("</think>", 1)[1]
    if "<think>" in response:
        return None
    return response


def boxed_contents(text: str) -> list[str]:
    """Contents of every \\boxed{...} / \\fbox{...} in order, nested braces matched; unclosed ones are skipped."""
    found: list[str] = []
    i = 0
    while True:
        starts = [(text.find(cmd, i), cmd) for cmd in BOXED_COMMANDS]
        starts = [(p, cmd) for p, cmd in starts if p >= 0]
        if not starts:
            return found
        pos, cmd = min(starts)
        j = pos + len(cmd)
        while j < len(text) and text[j] == " ":
            j += 1
        if j >= len(text) or text[j] != "{":
            i = pos + len(cmd)
            continue
        depth, k = 0, j
        while k < len(text):
            if text[k] == "{" and text[k - 1] != "\\":
                depth += 1
            elif text[k] == "}" and text[k - 1] != "\\":
                depth -= 1
                if depth == 0:
                    break
            k += 1
        if depth != 0:
            return found
        found.append(text[j + 1:k])
        i = k + 1


def _normalise_box(s: str) -> str:
    return re.sub(r"\s+", "", s)


def final_boxed(response: str) -> tuple[str | None, str]:
    """(the final boxed answer, reason). None when there is no answer or the response hedges between
    several different boxed answers (identical repeats are fine)."""
    region = answer_region(response)
    if region is None:
        return None, "unterminated <think> block"
    boxes = boxed_contents(region)
    if not boxes:
        return None, "no \\boxed{} answer"
    if len({_normalise_box(b) for b in boxes}) > 1:
        return None, f"hedging: {len(boxes)} different boxed answers"
    return boxes[-1].strip(), "ok"


def reference_and_answer(response: str, reference: Any, parse_reference) -> tuple[Any, str] | RewardResult:
    """The steps every game verifier starts with: parse the reference (a bad one fails with its reason), then
    take the final \\boxed{} answer of the response. Returns (parsed reference, answer) or the failed result."""
    try:
        parsed = parse_reference(reference)
    except (ValueError, TypeError) as e:
        return failed(f"bad reference: {e}")
    answer, why = final_boxed(response)
    if answer is None:
        return failed(why)
    return parsed, answer
