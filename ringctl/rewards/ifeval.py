"""Instruction following: rule-based checks for IFEval instruction ids, kwargs as in IFEval's input_data.jsonl.

reference = {"instruction_id_list": [...], "kwargs": [{...}, ...], "prompt": ...}; meta mode="strict" (default)
or "loose" (IFEval's loose mode: also try the response without its first line, last line, both, and each of
those with '*' removed). Score 1 only when every instruction holds; per-instruction results are in meta.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from typing import Any

from ringctl.rewards.base import RewardResult

_WORD = re.compile(r"\b\w+\b")


def _compare(count: int, target: int, relation: str | None) -> bool:
    if relation == "less than":
        return count < target
    if relation in (None, "at least"):
        return count >= target
    raise ValueError(f"unknown relation {relation!r}")


def _lang(text: str) -> str | None:
    from langdetect import DetectorFactory, LangDetectException, detect

    DetectorFactory.seed = 0
    try:
        return detect(text)
    except LangDetectException:
        return None


def _paragraphs_stars(text: str) -> list[str]:
    return [p.strip() for p in re.split(r"\s?\*\*\*\s?", text)]


def _sections(text: str, splitter: str) -> list[str]:
    return re.split(rf"\s?{re.escape(splitter)}\s?\d+\s?", text)


def _first_word(paragraph: str) -> str:
    words = paragraph.split()
    return re.sub(r"[^\w]", "", words[0]).lower() if words else ""


def _nth_paragraph(text: str, num_paragraphs: int, nth_paragraph: int, first_word: str) -> bool:
    paragraphs = [p for p in re.split(r"\n\s*\n", text)]
    if any(not p.strip() for p in paragraphs[1:-1]) or len([p for p in paragraphs if p.strip()]) != num_paragraphs:
        return False
    paragraphs = [p for p in paragraphs if p.strip()]
    return nth_paragraph <= len(paragraphs) and _first_word(paragraphs[nth_paragraph - 1]) == first_word.lower()


def _json(text: str) -> bool:
    body = re.sub(r"^\s*```(?:json|Json|JSON)?\s*|\s*```\s*$", "", text.strip())
    try:
        json.loads(body)
    except ValueError:
        return False
    return True


def _postscript(text: str, postscript_marker: str) -> bool:
    lower = text.lower()
    if postscript_marker == "P.P.S":
        pattern = r"\s*p\.\s?p\.\s?s.*$"
    elif postscript_marker == "P.S.":
        pattern = r"\s*p\.\s?s\..*$"
    else:
        pattern = r"\s*" + re.escape(postscript_marker.lower()) + r".*$"
    return bool(re.findall(pattern, lower, flags=re.MULTILINE))


def _two_responses(text: str) -> bool:
    parts = [p.strip() for p in text.split("******")]
    return len(parts) == 2 and all(parts) and parts[0] != parts[1]


CHECKS: dict[str, Callable[..., bool]] = {
    "keywords:existence": lambda t, keywords: all(re.search(re.escape(k), t, re.I) for k in keywords),
    "keywords:frequency": lambda t, keyword, frequency, relation: _compare(
        len(re.findall(re.escape(keyword), t, re.I)), frequency, relation),
    "keywords:forbidden_words": lambda t, forbidden_words: not any(
        re.search(r"\b" + re.escape(w) + r"\b", t, re.I) for w in forbidden_words),
    "keywords:letter_frequency": lambda t, letter, let_frequency, let_relation: _compare(
        t.lower().count(letter.lower()), let_frequency, let_relation),
    "length_constraints:number_words": lambda t, num_words, relation: _compare(
        len(_WORD.findall(t)), num_words, relation),
    "length_constraints:number_sentences": lambda t, num_sentences, relation: _compare(
        len([s for s in re.split(r"(?<=[.!?])\s+", t.strip()) if s.strip()]), num_sentences, relation),
    "length_constraints:number_paragraphs": lambda t, num_paragraphs: (
        all(_paragraphs_stars(t)[1:-1]) and len([p for p in _paragraphs_stars(t) if p]) == num_paragraphs),
    "length_constraints:nth_paragraph_first_word": _nth_paragraph,
    "detectable_format:json_format": _json,
    "detectable_format:title": lambda t: any(x.strip() for x in re.findall(r"<<([^\n]+)>>", t)),
    "detectable_format:number_bullet_lists": lambda t, num_bullets: len(
        re.findall(r"^\s*[\*\-]\s[^\*\-].*$", t, re.MULTILINE)) == num_bullets,
    "detectable_format:number_highlighted_sections": lambda t, num_highlights: len(
        [h for h in re.findall(r"\*[^\n\*]*\*", t) if h.strip("*").strip()]
        + [h for h in re.findall(r"\*\*[^\n\*]*\*\*", t) if h.strip("*").strip()]) >= num_highlights,
    "detectable_format:multiple_sections": lambda t, section_spliter, num_sections: len(
        _sections(t, section_spliter)) - 1 >= num_sections,
    "detectable_format:constrained_response": lambda t: any(
        o in t for o in ("My answer is yes.", "My answer is no.", "My answer is maybe.")),
    "detectable_content:postscript": _postscript,
    "detectable_content:number_placeholders": lambda t, num_placeholders: len(
        re.findall(r"\[.*?\]", t)) >= num_placeholders,
    "change_case:english_lowercase": lambda t: t == t.lower() and _lang(t) == "en",
    "change_case:english_capital": lambda t: t == t.upper() and _lang(t) == "en",
    "change_case:capital_word_frequency": lambda t, capital_frequency, capital_relation: _compare(
        len([w for w in _WORD.findall(t) if w.isupper()]), capital_frequency, capital_relation),
    "startend:end_checker": lambda t, end_phrase: t.strip().strip('"').lower().endswith(end_phrase.strip().lower()),
    "startend:quotation": lambda t: len(t.strip()) > 1 and t.strip()[0] == '"' and t.strip()[-1] == '"',
    "punctuation:no_comma": lambda t: "," not in t,
    "combination:two_responses": _two_responses,
    "combination:repeat_prompt": lambda t, prompt_to_repeat: t.strip().lower().startswith(
        prompt_to_repeat.strip().lower()),
    "language:response_language": lambda t, language: _lang(t) == language,
}


def loose_variants(response: str) -> list[str]:
    lines = response.split("\n")
    bases = [response, "\n".join(lines[1:]).strip(), "\n".join(lines[:-1]).strip(), "\n".join(lines[1:-1]).strip()]
    return bases + [b.replace("*", "") for b in bases]


def check_instruction(instruction_id: str, kwargs: dict | None, response: str, mode: str = "strict") -> bool:
    check = CHECKS[instruction_id]
    args = {k: v for k, v in (kwargs or {}).items() if v is not None}
    if instruction_id == "combination:repeat_prompt" and "prompt_to_repeat" not in args:
        raise ValueError("combination:repeat_prompt needs kwargs.prompt_to_repeat")
    variants = loose_variants(response) if mode == "loose" else [response]
    return any(v.strip() and check(v, **args) for v in variants)


def _parse(reference: Any) -> tuple[list[str], list[dict]]:
    if not isinstance(reference, dict) or "instruction_id_list" not in reference:
        raise ValueError("reference must be {'instruction_id_list': [...], 'kwargs': [...]}")
    ids = list(reference["instruction_id_list"])
    kwargs = list(reference.get("kwargs") or [{} for _ in ids])
    if len(kwargs) != len(ids):
        raise ValueError(f"{len(ids)} instructions but {len(kwargs)} kwargs")
    unknown = [i for i in ids if i not in CHECKS]
    if unknown:
        raise ValueError(f"unsupported instruction ids: {unknown}")
    return ids, kwargs


def verify(response: str, reference: Any, mode: str = "strict", **meta: Any) -> RewardResult:
    try:
        ids, kwargs = _parse(reference)
    except ValueError as e:
        return RewardResult(0.0, f"bad reference: {e}")
    results = {}
    for instruction_id, kw in zip(ids, kwargs, strict=True):
        try:
            results[instruction_id] = bool(check_instruction(instruction_id, kw, response, mode))
        except (TypeError, ValueError) as e:  # kwargs that do not fit the instruction
            return RewardResult(0.0, f"bad kwargs for {instruction_id}: {e}", {"instructions": results})
    failing = [i for i, ok in results.items() if not ok]
    reason = "all instructions followed" if not failing else f"not followed: {', '.join(failing)}"
    return RewardResult(float(not failing), reason, {"instructions": results, "mode": mode})


def check_reference(reference: Any, **meta: Any) -> tuple[bool, str]:
    try:
        _parse(reference)
    except ValueError as e:
        return False, str(e)
    return True, "ok"
