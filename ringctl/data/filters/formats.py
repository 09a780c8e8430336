"""Removal of guessable formats: multiple choice, true/false and yes/no items reward guessing in RL."""

from __future__ import annotations

import re
from typing import Literal

from pydantic import Field

from ringctl.data.filters.base import Filter, StepBase, field_text

GuessableKind = Literal["multiple_choice", "true_false", "yes_no"]

# options written as "(A) ...", "A) ...", "A. ..." or "A: ..." at a line start, or "(A)" inline
_OPTION_LINE_RE = re.compile(r"(?m)^\s*\(?([A-E])[\).:]\s+\S")
_OPTION_INLINE_RE = re.compile(r"\(([A-E])\)\s*\S")
_CHOICES_HEADER_RE = re.compile(r"\b(answer choices|options)\s*:", re.IGNORECASE)
_LETTER_ANSWER_RE = re.compile(r"^\s*\(?([A-E])\)?\.?\s*$")
_TRUE_FALSE_PROMPT_RE = re.compile(r"\btrue\s*(or|/)\s*false\b", re.IGNORECASE)
_TRUE_FALSE_ANSWERS = {"true", "false"}
_YES_NO_ANSWERS = {"yes", "no"}


def _option_letters(prompt: str) -> set[str]:
    return set(_OPTION_LINE_RE.findall(prompt)) | set(_OPTION_INLINE_RE.findall(prompt))


def guessable_kind(record: dict) -> str | None:
    """Which guessable format a record has, or None. Looks at the prompt's options and the reference answer."""
    prompt = field_text(record, "prompt")
    answer = record.get("answer")
    answer_text = answer.strip().strip(".").casefold() if isinstance(answer, str) else ""
    letters = _option_letters(prompt)
    if {"A", "B"} <= letters or (_CHOICES_HEADER_RE.search(prompt) and _LETTER_ANSWER_RE.match(answer_text.upper())):
        return "multiple_choice"
    if _LETTER_ANSWER_RE.match(answer_text.upper()) and letters:
        return "multiple_choice"
    if answer_text in _TRUE_FALSE_ANSWERS or _TRUE_FALSE_PROMPT_RE.search(prompt):
        return "true_false"
    if answer_text in _YES_NO_ANSWERS:
        return "yes_no"
    return None


class GuessableFormats(StepBase):
    """Drop multiple-choice, true/false and yes/no items (each kind can be kept by leaving it out of `drop`)."""

    type: Literal["guessable_formats"] = "guessable_formats"
    drop: list[GuessableKind] = Field(["multiple_choice", "true_false", "yes_no"], min_length=1)

    def build(self) -> Filter:
        return _GuessableFilter(set(self.drop))


class _GuessableFilter(Filter):
    def __init__(self, kinds: set[str]):
        self.kinds = kinds

    def check(self, record: dict) -> str | None:
        kind = guessable_kind(record)
        return kind if kind in self.kinds else None
