"""Math / STEM: the final \\boxed{} answer, judged equivalent to the reference the way Math-Verify intends.

The judgement has three steps, each chosen so that it can never accept a wrong answer:

1. ``normalise``: rewrite notation that Math-Verify reads wrongly or that its LaTeX parser cannot take under
   the antlr runtime hydra-core pins (4.9): percent signs (``\\%`` breaks that parser), thousands separators
   (``1,000``, ``1{,}000``, ``1\\,000``, ``1 000``: strict groups of three only), degrees, dollar signs,
   e-notation (``4.4e7`` would be read as 4.4·e·7; it becomes ``4.4 \\times 10^{7}``), spacing macros.
2. ``parse_whole``: the whole normalised answer goes through Math-Verify's own LaTeX normalisation and parser.
   Math-Verify's ``parse`` searches a text for anything it can parse, so for an answer it cannot read whole it
   may return a fragment (``\\frac{1}{3} E_{1}+\\frac{2}{3} E_{2}`` became 2/3); here a text that does not parse
   whole is unparsable, and numbers separated only by a space (``2 3``, ``10 00``) are refused, not multiplied.
3. ``math_verify.verify`` compares the two parsed answers (sets, intervals, tuples, equations ``x = 3`` vs
   ``3``, matrices, numeric tolerance), with percent handled as Math-Verify intends: ``62.5\\%``, ``62.5%`` and
   ``62.5`` are the same answer, and so is ``0.625`` when one side carries the percent sign.

Two answers whose canonical strings are equal (spaces removed only next to a non-alphanumeric character, so
``2 3`` is not ``23``) are equal without parsing. A response or reference that cannot be read scores 0 with the
reason and meta["unparsable"] ("response" or "reference"); nothing here raises.

Math-Verify bounds parsing and comparison with signal.alarm, which works only in the main thread and shares
the one ITIMER_REAL with anyone else. So its own timeouts are used only in the main thread with no timer
armed; otherwise they are switched off and the caller's timer (score_batch arms one per item) bounds the work.
"""

from __future__ import annotations

import logging
import re
import signal
import threading
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from ringctl.rewards.base import RewardResult, answer_region, boxed_contents, failed, passed

MATH_VERIFY_TIMEOUT_S = 5
_TEXT_ONLY = re.compile(r"^\s*(?:\\text\{\s*([A-Za-z][A-Za-z ]*)\s*\}|([A-Za-z][A-Za-z ]*))\s*$")

logging.getLogger("math_verify").setLevel(logging.CRITICAL)  # it warns once when timeouts are off; we mean it
logging.getLogger("latex2sympy2_extended").setLevel(logging.CRITICAL)


def _own_timeout() -> int | None:
    """Math-Verify's signal timeout when it is safe to use, else None (someone else bounds the time)."""
    if threading.current_thread() is not threading.main_thread():
        return None
    if signal.getitimer(signal.ITIMER_REAL)[0] > 0:
        return None
    return MATH_VERIFY_TIMEOUT_S


# ---------------------------------------------------------------------------------------------- normalise

_SPACING = re.compile(r"\\(?:left|right|big|Big|bigg|Bigg)(?![a-zA-Z])|(?<!\\)\\[,;:> ]|\\q?quad(?![a-zA-Z])"
                      r"|\\displaystyle(?![a-zA-Z])|\\(?:text|mathrm)\{\s*\}")
_DEGREES = re.compile(r"\^\s*\{\s*\\circ\s*\}|\^\s*\\circ(?![a-zA-Z])|\\degree(?![a-zA-Z])|°"
                      r"|\\text\{\s*degrees?\s*\}|(?<=\d)\s*degrees?\b")
_PERCENT = re.compile(r"\s*(?:\\%|%|\\text\{\s*\\?%\s*\}|\\text\{\s*percent\s*\}|(?<=\d)\s*percent\b)")
_DOLLAR = re.compile(r"\\\$|\\text\{\s*\\\$\s*\}|\$")
# {,} and \, between digit groups are thousands separators wherever they stand; a bare comma or space only when
# the whole answer is one grouped number ("1,000", "1 000"), since "12,102" inside (2,12)∪(12,102) is a list
_LATEX_THOUSANDS = re.compile(r"(?<![\d.])\d{1,3}(?:(?P<sep>\{,\}|\\,|,\\! ?)\d{3})(?:(?P=sep)\d{3})*(?!\d)")
_WHOLE_THOUSANDS = re.compile(r"[+-]?\d{1,3}(?:(?P<sep>,| )\d{3})(?:(?P=sep)\d{3})*(?:\.\d+)?")
_TRAILING_UNIT = re.compile(r"(?<=[\d}])\s*\\text\{\s*[A-Za-z][A-Za-z .]*\}\s*(?:\^\s*(?:\{[^{}]*\}|\d))?\s*$")
_BASE_NUMERAL = re.compile(r"(?<![\w\\])\d[0-9A-Za-z]*_\d+")
# 4.4e7, 1.2e-3, 3e8; but not 2e+1 or 2e-1, which may be Euler's e (2e + 1): a signed exponent needs a decimal point
_E_NOTATION = re.compile(r"(?<![\w.\\])(?:(\d+\.\d*|\.\d+)[eE]([+-]?\d+)|(\d+)[eE](\d+))(?![\w.])")
_JUXTAPOSED_NUMBERS = re.compile(r"\d\s+\.?\d")
# a solution set written as an inequality in one variable, bounds made of numbers only: -2 \le x \le 7
_BOUND = r"(?:[-+0-9.{}^/() ]|\\(?:frac|sqrt|pi|infty|cdot)(?![a-zA-Z]))+"
_LESS = r"(<|\\le(?:q)?(?![a-zA-Z])|≤)"
_GREATER = r"(>|\\ge(?:q)?(?![a-zA-Z])|≥)"
_CHAIN = re.compile(rf"\s*({_BOUND})\s*{_LESS}\s*[a-zA-Z]\s*{_LESS}\s*({_BOUND})\s*")
_ONE_SIDED = re.compile(rf"\s*[a-zA-Z]\s*(?:{_LESS}|{_GREATER})\s*({_BOUND})\s*")


def _inequality_as_interval(s: str) -> str:
    """'a \\le x < b' -> '[a, b)', 'x > a' -> '(a, \\infty)'; anything else unchanged."""
    m = _CHAIN.fullmatch(s)
    if m and m.group(1).strip() and m.group(4).strip():
        left = "(" if m.group(2) == "<" else "["
        right = ")" if m.group(3) == "<" else "]"
        return f"{left}{m.group(1).strip()}, {m.group(4).strip()}{right}"
    m = _ONE_SIDED.fullmatch(s)
    if m and m.group(3).strip():
        bound = m.group(3).strip()
        if m.group(1):  # x < b
            return f"(-\\infty, {bound}{')' if m.group(1) == '<' else ']'}"
        return f"{'(' if m.group(2) == '>' else '['}{bound}, \\infty)"
    return s


@dataclass(frozen=True)
class Normalised:
    latex: str
    percent: bool


def normalise(text: str) -> Normalised:
    """The answer text rewritten so that Math-Verify reads what a person reads (see the module docstring)."""
    s = text.strip()
    s = re.sub(r"\\[dt]frac(?![a-zA-Z])", r"\\frac", s)
    s = _DOLLAR.sub("", s)
    s = _LATEX_THOUSANDS.sub(lambda m: m.group(0).replace(m.group("sep"), ""), s)  # 10,\!080 (MATH's style)
    s = _SPACING.sub(" ", s.replace("\\!", ""))
    s = re.sub(r"\\mbox\{", r"\\text{", s)
    s = _DEGREES.sub("", s)
    percent = bool(_PERCENT.search(s))
    s = _PERCENT.sub("", s)
    s = _TRAILING_UNIT.sub("", s)
    s = re.sub(r"_\{\s*(\d+)\s*\}", r"_\1", s)
    s = _LATEX_THOUSANDS.sub(lambda m: m.group(0).replace(m.group("sep"), ""), s)
    s = re.sub(r"\s+", " ", s).strip()
    whole = _WHOLE_THOUSANDS.fullmatch(s)
    if whole:
        s = s.replace(whole.group("sep"), "")
    s = _E_NOTATION.sub(lambda m: f"{m.group(1) or m.group(3)} \\times 10^{{{m.group(2) or m.group(4)}}}", s)
    s = re.sub(r"\s+", " ", s).strip()
    s = _inequality_as_interval(s)
    return Normalised(s, percent)


def canonical(text: str) -> str:
    """A string form for the exact-match shortcut: normalised, with spaces dropped only where a side is not a
    letter or digit (so '2 3' and '23' stay different)."""
    n = normalise(text)
    s = re.sub(r"\s*([^A-Za-z0-9\s])\s*", r"\1", n.latex)
    return s + ("%" if n.percent else "")


# ------------------------------------------------------------------------------------------------- parse


@lru_cache(maxsize=1)
def _normalisation_config():
    from math_verify import LatexExtractionConfig

    return LatexExtractionConfig().normalization_config


@lru_cache(maxsize=4096)
def _parse_latex(latex: str):
    """Math-Verify's own LaTeX normalisation and parser on the whole text; raises when it cannot."""
    from latex2sympy2_extended.math_normalization import normalize_latex
    from math_verify.parser import parse_latex_cached

    return parse_latex_cached(normalize_latex(latex, _normalisation_config()))


class Unparsable(ValueError):
    pass


def parse_whole(text: str) -> tuple[Any, Normalised]:
    """(sympy object, normalised text) for a whole answer; raises Unparsable with the reason."""
    n = normalise(text)
    if not n.latex:
        raise Unparsable("empty answer")
    if _JUXTAPOSED_NUMBERS.search(re.sub(r"\\(?:text|mathrm)\{[^{}]*\}", " ; ", n.latex)):
        raise Unparsable(f"numbers separated only by a space in {text!r}")
    try:
        expr = _timed(_parse_latex, n.latex)
    except Unparsable:
        raise
    except Exception as e:  # antlr / sympy errors of every kind
        raise Unparsable(f"cannot parse {text!r}: {type(e).__name__}") from None
    if expr is None:
        raise Unparsable(f"cannot parse {text!r}")
    return expr, n


def _timed(fn, *args):
    timeout = _own_timeout()
    if timeout is None:
        return fn(*args)
    from math_verify.utils import timeout as mv_timeout

    return mv_timeout(timeout_seconds=timeout)(fn)(*args)


def parse_answer(text: str) -> list:
    """An answer in Math-Verify's [sympy, str] form ([] when it cannot be read whole)."""
    try:
        expr, n = parse_whole(text)
    except Unparsable:
        return []
    return [expr, n.latex]


# ------------------------------------------------------------------------------------------------ compare


def _mv_verify(gold: list, pred: list) -> bool:
    from math_verify import verify

    try:
        return bool(verify(gold, pred, timeout_seconds=_own_timeout()))
    except Exception:  # a comparison Math-Verify cannot make is not a match
        return False


def _scaled(expr: Any, factor: Any) -> Any | None:
    try:
        import sympy

        if isinstance(expr, sympy.Expr) and expr.is_number:
            return sympy.nsimplify(expr) * factor
    except Exception:
        pass
    return None


def judge(reference: str, answer: str) -> tuple[bool, str, dict]:
    """(equal?, reason, meta) for a reference and an answer, both as text."""
    ref_text, ans_text = _TEXT_ONLY.match(reference), _TEXT_ONLY.match(answer)
    if ref_text and ans_text:
        # plain words: Math-Verify would read "Evelyn" as a product of symbols and accept any anagram
        same = _words(ref_text) == _words(ans_text)
        return same, "correct" if same else "wrong answer", {}
    if canonical(reference) == canonical(answer):
        return True, "correct", {}
    if _BASE_NUMERAL.search(normalise(reference).latex) or _BASE_NUMERAL.search(normalise(answer).latex):
        # 52_8 is a numeral in base 8: Math-Verify reads the subscript as an index and drops it
        return False, "wrong answer", {}
    try:
        ref_expr, ref_n = parse_whole(reference)
    except Unparsable as e:
        return False, f"reference unparsable: {e}", {"unparsable": "reference"}
    try:
        ans_expr, ans_n = parse_whole(answer)
    except Unparsable as e:
        return False, f"answer unparsable: {e}", {"unparsable": "response"}
    if _mv_verify([ref_expr, ref_n.latex], [ans_expr, ans_n.latex]):
        return True, "correct", {}
    if ref_n.percent != ans_n.percent:
        # 62.5% and 0.625: the side with the percent sign, divided by 100
        import sympy

        if ref_n.percent:
            ref_scaled = _scaled(ref_expr, sympy.Rational(1, 100))
            if ref_scaled is not None and _mv_verify([ref_scaled], [ans_expr]):
                return True, "correct", {}
        else:
            ans_scaled = _scaled(ans_expr, sympy.Rational(1, 100))
            if ans_scaled is not None and _mv_verify([ref_expr], [ans_scaled]):
                return True, "correct", {}
    return False, "wrong answer", {}


def equivalent(reference: str, answer: str) -> bool:
    return judge(reference, answer)[0]


def math_verify_equal(reference: str, answer: str) -> bool:
    """Math-Verify's comparison on the two answers as ringctl parses them (whole, normalised)."""
    gold, pred = parse_answer(reference), parse_answer(answer)
    if not gold or not pred:
        return False
    return _mv_verify(gold, pred)


def _words(m: re.Match) -> str:
    return " ".join((m[1] or m[2]).lower().split())


def reference_text(reference: Any) -> str:
    """A reference is a string, a number, or a dict with 'answer'; GSM8K-style '... #### 18' keeps the tail."""
    if isinstance(reference, dict):
        reference = reference.get("answer", "")
    if reference is None:
        return ""
    text = str(reference).strip()
    if "####" in text:
        text = text.rsplit("####", 1)[1].strip()
    boxes = boxed_contents(text)
    return boxes[-1].strip() if boxes else text


def verify(response: str, reference: Any, **meta: Any) -> RewardResult:
    ref = reference_text(reference)
    if not ref:
        return failed("empty reference", unparsable="reference")
    if not isinstance(response, str):
        return failed("response is not text", unparsable="response")
    region = answer_region(response)
    if region is None:
        return failed("unterminated <think> block", unparsable="response")
    boxes = [b.strip() for b in boxed_contents(region)]
    if not boxes:
        return failed("no \\boxed{} answer", unparsable="response")
    final = boxes[-1]
    others = {b for b in boxes[:-1] if canonical(b) != canonical(final)}
    if any(not equivalent(final, b) for b in others):
        return failed(f"hedging: {len(others) + 1} different boxed answers", answer=final)
    ok, reason, info = judge(ref, final)
    if ok:
        return passed(answer=final)
    return failed(reason, answer=final, **info)


def check_reference(reference: Any, **meta: Any) -> tuple[bool, str]:
    ref = reference_text(reference)
    if not ref:
        return False, "empty reference"
    if _TEXT_ONLY.match(ref):
        return True, "ok (text answer)"
    try:
        parse_whole(ref)
    except Unparsable as e:
        return False, str(e)
    return True, "ok"
