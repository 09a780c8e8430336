"""Instruction following: the IFEval checks, instruction by instruction as the reference implements them.

The reference is Google's IFEval code as lm-evaluation-harness carries it (``lm_eval/tasks/ifeval``:
``instructions.py``, ``instructions_util.py``, ``utils.py``). Every one of the 25 instruction ids of the IFEval
data set is implemented here with the reference's semantics (the same regular expressions, the same NLTK
sentence and word splitting, the same langdetect calls), except where the reference is demonstrably wrong;
those places are listed in ``DEVIATIONS`` (and in the README), each with an example, and
``bench/verifier_agreement.py`` measures the agreement with the reference itself.

reference = {"instruction_id_list": [...], "kwargs": [{...}, ...], "prompt": ...}; meta mode="strict" (default)
or "loose" (the reference's loose mode: also try the response without its first line, its last line, both, and
each of those with every '*' removed). Score 1 only when every instruction holds; per-instruction results are in
meta["instructions"]. A reference that cannot be used (unknown id, missing or malformed kwargs) scores 0 with
the reason and meta["unparsable"] = "reference"; nothing here raises.
"""

from __future__ import annotations

import collections
import inspect
import json
import re
from collections.abc import Callable
from typing import Any

from ringctl.rewards.base import RewardResult
from ringctl.rewards.text_split import count_sentences, count_words, word_tokens

RELATIONS = ("less than", "at least")
CONSTRAINED_RESPONSE_OPTIONS = ("My answer is yes.", "My answer is no.", "My answer is maybe.")
# langdetect names Chinese by script; IFEval's language kwargs are ISO 639-1 codes
_LANGDETECT_ALIASES = {"zh-cn": "zh", "zh-tw": "zh"}

# Where ringctl deliberately disagrees with the reference: id -> (instruction ids, why, example).
# Each example is also a case in tests/data/verifier_corpus/ifeval.jsonl with the reference's own verdict.
DEVIATIONS: dict[str, dict[str, Any]] = {
    "literal_kwargs": {
        "instructions": ["keywords:existence", "keywords:frequency", "keywords:forbidden_words",
                         "detectable_format:multiple_sections", "detectable_content:postscript"],
        "why": "the reference pastes keywords, section splitters and postscript markers into regular expressions "
               "unescaped, so '.', '+', '?' or '(' in them change the meaning or raise re.error; ringctl matches "
               "them literally",
        "example": "keywords:frequency {keyword: 'e.g.', frequency: 2}: 'eggs, eager' counts 2 for the reference, "
                   "0 for ringctl",
    },
    "forbidden_word_symbol_edge": {
        "instructions": ["keywords:forbidden_words"],
        "why": "the reference wraps a forbidden word in \\b...\\b, which can never match a word that starts or "
               "ends with a symbol; ringctl requires a word boundary only on a side that is a word character",
        "example": "forbidden_words ['c++']: 'I code in c and python.' violates the reference (its pattern "
                   "\\bc++\\b finds the letter c), not ringctl; ['.net'] on 'We build on .NET today.' is found by "
                   "ringctl only",
    },
    "langdetect_failure": {
        "instructions": ["language:response_language"],
        "why": "when langdetect finds no language features (no letters) the reference counts the instruction as "
               "followed; ringctl counts it as not followed (a response with no words is in no language). The "
               "case checks share the code, but there str.islower/isupper already fail on a text with no letters",
        "example": "language:response_language {language: 'de'}: '12345 !!!' passes the reference, fails ringctl",
    },
    "chinese_code": {
        "instructions": ["language:response_language"],
        "why": "langdetect reports Chinese as 'zh-cn' or 'zh-tw', so the reference can never pass language 'zh'; "
               "ringctl maps both to 'zh'",
        "example": "{language: 'zh'}: '今天天气很好，我们一起去公园散步吧。' fails the reference, passes ringctl",
    },
    "bullet_horizontal_rule": {
        "instructions": ["detectable_format:number_bullet_lists"],
        "why": "the reference counts every line starting with '-' as a bullet, including a markdown horizontal "
               "rule ('---'); ringctl does not count rules",
        "example": "num_bullets 2: '* a\\n* b\\n---\\nend' has 3 bullets for the reference, 2 for ringctl",
    },
    "bullet_italic_line": {
        "instructions": ["detectable_format:number_bullet_lists"],
        "why": "the reference counts a line that opens with an emphasis span ('*Note:* ...') as a '*' bullet; "
               "ringctl does not (a bullet marker is not closed by another '*' on its line)",
        "example": "num_bullets 2: '*Note:* read this\\n* a\\n* b' has 3 bullets for the reference, 2 for ringctl",
    },
    "nth_paragraph_leading_blank": {
        "instructions": ["length_constraints:nth_paragraph_first_word"],
        "why": "the reference counts non-empty paragraphs but then indexes the list that still holds the empty "
               "ones, so a response opening with a blank line reads the wrong paragraph; ringctl indexes the "
               "non-empty paragraphs it counted",
        "example": "num_paragraphs 2, nth_paragraph 1, first_word 'so': '\\n\\nSo it begins.\\n\\nThe end.' fails "
                   "the reference, passes ringctl",
    },
}


class BadKwargs(ValueError):
    """kwargs that do not fit their instruction (missing, unknown, wrong type, unknown relation)."""


# ---------------------------------------------------------------- helpers shared by several instructions


def _compare(count: int, threshold: int, relation: str) -> bool:
    if relation == "less than":
        return count < threshold
    return count >= threshold  # "at least" (checked when the kwargs are read)


def _literal(pattern: str) -> str:
    """A keyword as a regular expression that matches exactly its text (see DEVIATIONS['literal_kwargs'])."""
    return re.escape(pattern)


def _as_word(word: str) -> str:
    """\\b...\\b around a word, but only on the sides where the word has a word character
    (DEVIATIONS['forbidden_word_symbol_edge']): identical to the reference for ordinary words."""
    left = r"(?<!\w)" if re.match(r"\w", word) else ""
    right = r"(?!\w)" if re.search(r"\w$", word) else ""
    return left + re.escape(word) + right


def detect_language(text: str) -> str | None:
    """langdetect's code for text (seeded, so a given text always gets the same answer); None when langdetect
    finds nothing to go on."""
    from langdetect import DetectorFactory, LangDetectException, detect

    DetectorFactory.seed = 0
    try:
        code = detect(text)
    except LangDetectException:
        return None
    return _LANGDETECT_ALIASES.get(code, code)


# ---------------------------------------------------------------- the 25 instructions, reference order


def response_language(value: str, *, language: str) -> bool:
    return detect_language(value) == language


def number_sentences(value: str, *, num_sentences: int, relation: str) -> bool:
    return _compare(count_sentences(value), num_sentences, relation)


def number_placeholders(value: str, *, num_placeholders: int) -> bool:
    return len(re.findall(r"\[.*?\]", value)) >= num_placeholders


_STAR_BULLET = re.compile(r"^\s*\*[^\*].*$", re.MULTILINE)
_DASH_BULLET = re.compile(r"^\s*-.*$", re.MULTILINE)
_HORIZONTAL_RULE = re.compile(r"-(?:[ \t]*-){2,}[ \t]*")
# an emphasis span as markdown reads one: the opening '*' followed, the closing '*' preceded, by a non-space
_EMPHASIS_LINE = re.compile(r"\*[^\s*](?:[^*\n]*[^\s*])?\*(?!\*)")


def bullet_lines(value: str) -> list[str]:
    """The lines the reference counts as bullets ('*' not followed by '*', or '-', after optional blanks), less
    horizontal rules and lines that open with an emphasis span (DEVIATIONS['bullet_*'])."""
    stars = [m for m in _STAR_BULLET.findall(value) if not _EMPHASIS_LINE.match(m.strip())]
    dashes = [m for m in _DASH_BULLET.findall(value) if not _HORIZONTAL_RULE.fullmatch(m.strip())]
    return stars + dashes


def number_bullet_lists(value: str, *, num_bullets: int) -> bool:
    return len(bullet_lines(value)) == num_bullets


def constrained_response(value: str) -> bool:
    value = value.strip()
    return any(option in value for option in CONSTRAINED_RESPONSE_OPTIONS)


def number_highlighted_sections(value: str, *, num_highlights: int) -> bool:
    singles = [h for h in re.findall(r"\*[^\n\*]*\*", value) if h.strip("*").strip()]
    doubles = [h for h in re.findall(r"\*\*[^\n\*]*\*\*", value) if h.removeprefix("**").removesuffix("**").strip()]
    return len(singles) + len(doubles) >= num_highlights


def multiple_sections(value: str, *, section_spliter: str, num_sections: int) -> bool:
    pattern = r"\s?" + _literal(section_spliter.strip()) + r"\s?\d+\s?"
    return len(re.split(pattern, value)) - 1 >= num_sections


def number_paragraphs(value: str, *, num_paragraphs: int) -> bool:
    paragraphs = re.split(r"\s?\*\*\*\s?", value)
    count = len(paragraphs)
    for index, paragraph in enumerate(paragraphs):
        if not paragraph.strip():
            if index in (0, len(paragraphs) - 1):
                count -= 1
            else:
                return False  # an empty paragraph between two separators
    return count == num_paragraphs


def postscript(value: str, *, postscript_marker: str) -> bool:
    marker = postscript_marker.strip()
    if marker == "P.P.S":
        pattern = r"\s*p\.\s?p\.\s?s.*$"
    elif marker == "P.S.":
        pattern = r"\s*p\.\s?s\..*$"
    else:
        pattern = r"\s*" + _literal(marker.lower()) + r".*$"
    return bool(re.findall(pattern, value.lower(), flags=re.MULTILINE))


def keywords_existence(value: str, *, keywords: list[str]) -> bool:
    return all(re.search(_literal(k), value, flags=re.IGNORECASE) for k in keywords)


def keyword_frequency(value: str, *, keyword: str, frequency: int, relation: str) -> bool:
    found = len(re.findall(_literal(keyword.strip()), value, flags=re.IGNORECASE))
    return _compare(found, frequency, relation)


def number_words(value: str, *, num_words: int, relation: str) -> bool:
    return _compare(count_words(value), num_words, relation)


def json_format(value: str) -> bool:
    value = (value.strip().removeprefix("```json").removeprefix("```Json").removeprefix("```JSON")
             .removeprefix("```").removesuffix("```").strip())
    try:
        json.loads(value)
    except ValueError:
        return False
    return True


_PARAGRAPH_FIRST_WORD_STOP = frozenset(".,?!'\"")


def nth_paragraph_first_word(value: str, *, num_paragraphs: int, nth_paragraph: int, first_word: str) -> bool:
    paragraphs = [p for p in re.split(r"\n\n", value) if p.strip()]  # DEVIATIONS['nth_paragraph_leading_blank']
    if nth_paragraph > len(paragraphs) or nth_paragraph <= 0:
        return False
    word = paragraphs[nth_paragraph - 1].strip().split()[0].strip().lstrip("'").lstrip('"')
    found = ""
    for letter in word:
        if letter in _PARAGRAPH_FIRST_WORD_STOP:
            break
        found += letter.lower()
    return len(paragraphs) == num_paragraphs and found == first_word.lower()


def forbidden_words(value: str, *, forbidden_words: list[str]) -> bool:
    return not any(re.search(_as_word(w), value, flags=re.IGNORECASE) for w in forbidden_words)


def two_responses(value: str) -> bool:
    parts = value.split("******")
    kept = []
    for index, part in enumerate(parts):
        if part.strip():
            kept.append(part)
        elif index not in (0, len(parts) - 1):
            return False  # an empty response between two separators
    return len(kept) == 2 and kept[0].strip() != kept[1].strip()


def repeat_prompt(value: str, *, prompt_to_repeat: str) -> bool:
    return value.strip().lower().startswith(prompt_to_repeat.strip().lower())


def end_checker(value: str, *, end_phrase: str) -> bool:
    return value.strip().strip('"').lower().endswith(end_phrase.strip().lower())


def title(value: str) -> bool:
    return any(t.lstrip("<").rstrip(">").strip() for t in re.findall(r"<<[^\n]+>>", value))


def letter_frequency(value: str, *, letter: str, let_frequency: int, let_relation: str) -> bool:
    return _compare(collections.Counter(value.lower())[letter.strip().lower()], let_frequency, let_relation)


def english_capital(value: str) -> bool:
    return value.isupper() and detect_language(value) == "en"


def english_lowercase(value: str) -> bool:
    return value.islower() and detect_language(value) == "en"


def no_comma(value: str) -> bool:
    return "," not in value


def capital_word_frequency(value: str, *, capital_frequency: int, capital_relation: str) -> bool:
    capitals = [w for w in word_tokens(value) if w.isupper()]
    return _compare(len(capitals), capital_frequency, capital_relation)


def quotation(value: str) -> bool:
    value = value.strip()
    return len(value) > 1 and value[0] == '"' and value[-1] == '"'


CHECKS: dict[str, Callable[..., bool]] = {
    "keywords:existence": keywords_existence,
    "keywords:frequency": keyword_frequency,
    "keywords:forbidden_words": forbidden_words,
    "keywords:letter_frequency": letter_frequency,
    "language:response_language": response_language,
    "length_constraints:number_sentences": number_sentences,
    "length_constraints:number_paragraphs": number_paragraphs,
    "length_constraints:number_words": number_words,
    "length_constraints:nth_paragraph_first_word": nth_paragraph_first_word,
    "detectable_content:number_placeholders": number_placeholders,
    "detectable_content:postscript": postscript,
    "detectable_format:number_bullet_lists": number_bullet_lists,
    "detectable_format:constrained_response": constrained_response,
    "detectable_format:number_highlighted_sections": number_highlighted_sections,
    "detectable_format:multiple_sections": multiple_sections,
    "detectable_format:json_format": json_format,
    "detectable_format:title": title,
    "combination:two_responses": two_responses,
    "combination:repeat_prompt": repeat_prompt,
    "startend:end_checker": end_checker,
    "change_case:capital_word_frequency": capital_word_frequency,
    "change_case:english_capital": english_capital,
    "change_case:english_lowercase": english_lowercase,
    "punctuation:no_comma": no_comma,
    "startend:quotation": quotation,
}

_INT_KWARGS = {"num_sentences", "num_placeholders", "num_bullets", "num_highlights", "num_sections",
               "num_paragraphs", "frequency", "num_words", "nth_paragraph", "let_frequency", "capital_frequency"}
_STR_KWARGS = {"language", "section_spliter", "postscript_marker", "keyword", "first_word", "prompt_to_repeat",
               "end_phrase", "letter"}
_RELATION_KWARGS = {"relation", "let_relation", "capital_relation"}


def instruction_kwargs(instruction_id: str, kwargs: dict | None) -> dict[str, Any]:
    """The kwargs an instruction's check takes, validated; raises BadKwargs with the reason.

    Like the reference, None values are dropped (the HF copy of IFEval fills every key with None). Unlike the
    reference, a missing value is an error rather than a random draw, and an integer must be a non-negative
    integer."""
    if instruction_id not in CHECKS:
        raise BadKwargs(f"unsupported instruction id {instruction_id!r}")
    if kwargs is not None and not isinstance(kwargs, dict):
        raise BadKwargs(f"kwargs must be a mapping, not {type(kwargs).__name__}")
    given = {k: v for k, v in (kwargs or {}).items() if v is not None}
    params = inspect.signature(CHECKS[instruction_id]).parameters
    wanted = [name for name, p in params.items() if p.kind is inspect.Parameter.KEYWORD_ONLY]
    unknown = sorted(set(given) - set(wanted))
    if unknown:
        raise BadKwargs(f"{instruction_id} takes no {', '.join(unknown)}")
    missing = [name for name in wanted if name not in given]
    if missing:
        raise BadKwargs(f"{instruction_id} needs {', '.join(missing)}")
    out: dict[str, Any] = {}
    for name, value in given.items():
        if name in _INT_KWARGS:
            if isinstance(value, bool) or not isinstance(value, (int, float, str)):
                raise BadKwargs(f"{name} must be an integer, not {value!r}")
            try:
                number = float(value)
            except ValueError:
                raise BadKwargs(f"{name} must be an integer, not {value!r}") from None
            if number != int(number) or number < 0:
                raise BadKwargs(f"{name} must be a non-negative integer, not {value!r}")
            out[name] = int(number)
        elif name in _RELATION_KWARGS:
            if value not in RELATIONS:
                raise BadKwargs(f"{name} must be one of {RELATIONS}, not {value!r}")
            out[name] = value
        elif name in _STR_KWARGS:
            if not isinstance(value, str) or not value.strip():
                raise BadKwargs(f"{name} must be a non-empty string, not {value!r}")
            out[name] = value
        else:  # keywords, forbidden_words: lists of strings
            if isinstance(value, str):
                value = [value]
            if not isinstance(value, (list, tuple)) or not value \
                    or not all(isinstance(v, str) and v for v in value):
                raise BadKwargs(f"{name} must be a non-empty list of strings, not {value!r}")
            out[name] = list(value)
    if instruction_id == "length_constraints:nth_paragraph_first_word" \
            and not 1 <= out["nth_paragraph"] <= out["num_paragraphs"]:
        raise BadKwargs(f"nth_paragraph must be between 1 and num_paragraphs, not {out['nth_paragraph']}")
    if instruction_id == "keywords:letter_frequency" and len(out["letter"].strip()) != 1:
        raise BadKwargs(f"letter must be one character, not {out['letter']!r}")
    return out


def loose_variants(response: str) -> list[str]:
    """The reference's loose mode: the response, without its first line, its last line, both; each also with
    every '*' removed."""
    lines = response.split("\n")
    bases = [response, "\n".join(lines[1:]).strip(), "\n".join(lines[:-1]).strip(), "\n".join(lines[1:-1]).strip()]
    return bases + [b.replace("*", "") for b in bases]


def check_instruction(instruction_id: str, kwargs: dict | None, response: str, mode: str = "strict") -> bool:
    """Does the response follow one instruction? Raises BadKwargs for kwargs that do not fit it."""
    args = instruction_kwargs(instruction_id, kwargs)
    check = CHECKS[instruction_id]
    variants = loose_variants(response) if mode == "loose" else [response]
    return any(v.strip() and check(v, **args) for v in variants)


def _parse(reference: Any) -> tuple[list[str], list[dict]]:
    if isinstance(reference, str):
        try:
            reference = json.loads(reference)
        except ValueError:
            pass
    if not isinstance(reference, dict) or "instruction_id_list" not in reference:
        raise BadKwargs("reference must be {'instruction_id_list': [...], 'kwargs': [...]}")
    ids = reference["instruction_id_list"]
    if not isinstance(ids, (list, tuple)) or not ids or not all(isinstance(i, str) for i in ids):
        raise BadKwargs("instruction_id_list must be a non-empty list of ids")
    kwargs = reference.get("kwargs")
    if kwargs is not None and not isinstance(kwargs, (list, tuple)):
        raise BadKwargs("kwargs must be a list with one mapping per instruction")
    kwargs = list(kwargs) if kwargs is not None else [{} for _ in ids]
    if len(kwargs) != len(ids):
        raise BadKwargs(f"{len(ids)} instructions but {len(kwargs)} kwargs")
    for instruction_id, kw in zip(ids, kwargs, strict=True):
        instruction_kwargs(instruction_id, kw)
    return list(ids), kwargs


def verify(response: str, reference: Any, mode: str = "strict", **meta: Any) -> RewardResult:
    if mode not in ("strict", "loose"):
        return RewardResult(0.0, f"unknown ifeval mode {mode!r} (strict or loose)", {"unparsable": "reference"})
    try:
        ids, kwargs = _parse(reference)
    except BadKwargs as e:
        return RewardResult(0.0, f"bad reference: {e}", {"unparsable": "reference"})
    if not isinstance(response, str):
        return RewardResult(0.0, "response is not text", {"unparsable": "response"})
    results: dict[str, bool] = {}
    errors: dict[str, str] = {}
    for instruction_id, kw in zip(ids, kwargs, strict=True):
        try:
            followed = check_instruction(instruction_id, kw, response, mode)
        except Exception as e:  # e.g. RecursionError from json.loads on deeply nested text: not followed
            followed = False
            errors[instruction_id] = f"{type(e).__name__}: {e}"[:200]
        results[instruction_id] = results.get(instruction_id, True) and followed
    failing = [i for i, ok in results.items() if not ok]
    reason = "all instructions followed" if not failing else f"not followed: {', '.join(failing)}"
    info: dict[str, Any] = {"instructions": results, "mode": mode}
    if errors:
        info["errors"] = errors
    return RewardResult(float(not failing), reason, info)


def check_reference(reference: Any, **meta: Any) -> tuple[bool, str]:
    try:
        _parse(reference)
    except BadKwargs as e:
        return False, str(e)
    return True, "ok"
