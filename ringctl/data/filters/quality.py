"""Cheap per-record checks: required fields, length bounds, invalid characters and images."""

from __future__ import annotations

import re
from typing import Literal

from pydantic import Field, model_validator

from ringctl.data.filters.base import Filter, StepBase, field_text

RecordField = Literal["prompt", "answer", "solution"]

# C0/C1 control characters other than tab, newline and carriage return
_CONTROL_RE = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]")
_IMAGE_RE = re.compile(
    r"!\[[^\]]*\]\([^)]*\)"                        # markdown image
    r"|<img\b"                                    # html image
    r"|\\includegraphics"                         # LaTeX figure
    r"|\bdata:image/"                             # inline data URI
    r"|\.(?:png|jpe?g|gif|bmp|svg|webp)\b",       # image file names
    re.IGNORECASE,
)


def _empty(value) -> bool:
    return value is None or (isinstance(value, (str, list, dict, tuple)) and len(value) == 0) or (
        isinstance(value, str) and not value.strip())


class RequireFields(StepBase):
    """Drop records with an empty or missing field (e.g. no reference answer: nothing to reward against)."""

    type: Literal["require_fields"] = "require_fields"
    fields: list[RecordField] = Field(["prompt", "answer"], min_length=1)

    def build(self) -> Filter:
        return _RequireFilter(list(self.fields))


class _RequireFilter(Filter):
    def __init__(self, fields: list[str]):
        self.fields = fields

    def check(self, record: dict) -> str | None:
        for f in self.fields:
            if _empty(record.get(f)):
                return f"missing_{f}"
        return None


class Length(StepBase):
    """Keep records whose field length (characters and/or whitespace-separated words) lies within bounds."""

    type: Literal["length"] = "length"
    field: RecordField = "prompt"
    min_chars: int | None = Field(None, ge=0)
    max_chars: int | None = Field(None, ge=1)
    min_words: int | None = Field(None, ge=0)
    max_words: int | None = Field(None, ge=1)

    @model_validator(mode="after")
    def _bounds(self) -> Length:
        if all(v is None for v in (self.min_chars, self.max_chars, self.min_words, self.max_words)):
            raise ValueError("length: set at least one of min_chars, max_chars, min_words, max_words")
        for lo, hi in ((self.min_chars, self.max_chars), (self.min_words, self.max_words)):
            if lo is not None and hi is not None and lo > hi:
                raise ValueError(f"length: minimum {lo} is above maximum {hi}")
        return self

    def build(self) -> Filter:
        return _LengthFilter(self)


class _LengthFilter(Filter):
    def __init__(self, cfg: Length):
        self.cfg = cfg

    def check(self, record: dict) -> str | None:
        c = self.cfg
        text = field_text(record, c.field)
        n = len(text)
        if c.min_chars is not None and n < c.min_chars:
            return f"{c.field}_too_short"
        if c.max_chars is not None and n > c.max_chars:
            return f"{c.field}_too_long"
        if c.min_words is not None or c.max_words is not None:
            w = len(text.split())
            if c.min_words is not None and w < c.min_words:
                return f"{c.field}_too_short"
            if c.max_words is not None and w > c.max_words:
                return f"{c.field}_too_long"
        return None


class Characters(StepBase):
    """Drop records with control characters, U+FFFD (broken decoding), images, or too much non-ASCII text."""

    type: Literal["characters"] = "characters"
    fields: list[RecordField] = Field(["prompt", "solution"], min_length=1)
    control_chars: bool = True
    replacement_char: bool = True
    images: bool = True
    max_non_ascii_fraction: float | None = Field(None, ge=0.0, le=1.0)

    def build(self) -> Filter:
        return _CharactersFilter(self)


class _CharactersFilter(Filter):
    def __init__(self, cfg: Characters):
        self.cfg = cfg

    def check(self, record: dict) -> str | None:
        c = self.cfg
        for f in c.fields:
            text = field_text(record, f)
            if not text:
                continue
            if c.control_chars and _CONTROL_RE.search(text):
                return "control_characters"
            if c.replacement_char and "\ufffd" in text:
                return "replacement_character"
            if c.images and _IMAGE_RE.search(text):
                return "image"
            if c.max_non_ascii_fraction is not None and not text.isascii():
                non_ascii = sum(1 for ch in text if ord(ch) > 127)
                if non_ascii / len(text) > c.max_non_ascii_fraction:
                    return "non_ascii"
        return None
