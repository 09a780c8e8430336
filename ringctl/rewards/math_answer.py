"""Math / STEM: the final \\boxed{} answer, judged equivalent to the reference by Math-Verify.

Math-Verify bounds parsing and comparison with signal.alarm, which works only in the main thread and shares
the one ITIMER_REAL with anyone else. So its own timeouts are used only in the main thread with no timer
armed; otherwise they are switched off and the caller's timer (score_batch arms one per item) bounds the work.
"""

from __future__ import annotations

import logging
import re
import signal
import threading
from functools import lru_cache
from typing import Any

from ringctl.rewards.base import RewardResult, answer_region, boxed_contents, failed, passed

MATH_VERIFY_TIMEOUT_S = 5
_TEXT_ONLY = re.compile(r"^\s*(?:\\text\{\s*([A-Za-z][A-Za-z ]*)\s*\}|([A-Za-z][A-Za-z ]*))\s*$")

logging.getLogger("math_verify").setLevel(logging.ERROR)  # it warns once when timeouts are off; we mean it


def _own_timeout() -> int | None:
    """Math-Verify's signal timeout when it is safe to use, else None (someone else bounds the time)."""
    if threading.current_thread() is not threading.main_thread():
        return None
    if signal.getitimer(signal.ITIMER_REAL)[0] > 0:
        return None
    return MATH_VERIFY_TIMEOUT_S


@lru_cache(maxsize=1)
def _configs() -> tuple:
    from math_verify import ExprExtractionConfig, LatexExtractionConfig

    return (LatexExtractionConfig(boxed_match_priority=0), ExprExtractionConfig())


def parse_answer(text: str) -> list:
    """Parse one answer (the content of a box, or a bare reference) into Math-Verify's [sympy, str] form."""
    from math_verify import parse

    return parse(f"\\boxed{{{text}}}", extraction_config=list(_configs()), parsing_timeout=_own_timeout())


def equivalent(reference: str, answer: str) -> bool:
    ref_text, ans_text = _TEXT_ONLY.match(reference), _TEXT_ONLY.match(answer)
    if ref_text and ans_text:
        # plain words: Math-Verify would read "Evelyn" as a product of symbols and accept any anagram
        return _words(ref_text) == _words(ans_text)
    if _normalise(reference) == _normalise(answer):
        return True
    return math_verify_equal(reference, answer)


def math_verify_equal(reference: str, answer: str) -> bool:
    """Math-Verify's judgement alone (parse both as boxed LaTeX/expressions, then compare)."""
    from math_verify import verify

    gold, pred = parse_answer(reference), parse_answer(answer)
    if not gold or not pred:
        return False
    return bool(verify(gold, pred, timeout_seconds=_own_timeout()))


def _words(m: re.Match) -> str:
    return " ".join((m[1] or m[2]).lower().split())


def _normalise(s: str) -> str:
    s = re.sub(r"\\(left|right|!|,|;|quad)", "", s)
    s = re.sub(r"\\(d|t)frac", r"\\frac", s)
    s = s.replace("$", "").replace("^\\circ", "").replace("^{\\circ}", "")
    return re.sub(r"\s+", "", s)


def reference_text(reference: Any) -> str:
    """A reference is a string, a number, or a dict with 'answer'; GSM8K-style '... #### 18' keeps the tail."""
    if isinstance(reference, dict):
        reference = reference.get("answer", "")
    text = str(reference).strip()
    if "####" in text:
        text = text.rsplit("####", 1)[1].strip()
    boxes = boxed_contents(text)
    return boxes[-1].strip() if boxes else text


def verify(response: str, reference: Any, **meta: Any) -> RewardResult:
    ref = reference_text(reference)
    if not ref:
        return failed("empty reference")
    region = answer_region(response)
    if region is None:
        return failed("unterminated <think> block")
    boxes = [b.strip() for b in boxed_contents(region)]
    if not boxes:
        return failed("no \\boxed{} answer")
    final = boxes[-1]
    others = {b for b in boxes[:-1] if _normalise(b) != _normalise(final)}
    if any(not equivalent(final, b) for b in others):
        return failed(f"hedging: {len(others) + 1} different boxed answers", answer=final)
    if equivalent(ref, final):
        return passed(answer=final)
    return failed("wrong answer", answer=final)


def check_reference(reference: Any, **meta: Any) -> tuple[bool, str]:
    ref = reference_text(reference)
    if not ref:
        return False, "empty reference"
    if _TEXT_ONLY.match(ref):
        return True, "ok (text answer)"
    parsed = parse_answer(ref)
    if not parsed:
        return False, "math-verify cannot parse the reference"
    return True, "ok"
