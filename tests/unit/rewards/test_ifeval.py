"""IFEval-style rule checks with kwargs as IFEval's input_data.jsonl writes them."""

import pytest

from ringctl.rewards import score, score_detailed, verify_reference


def ref(*pairs):
    return {"instruction_id_list": [p[0] for p in pairs], "kwargs": [p[1] for p in pairs], "prompt": "p"}


@pytest.mark.parametrize(("iid", "kwargs", "good", "bad"), [
    ("keywords:existence", {"keywords": ["river", "stone"]}, "a river and a stone", "a river only"),
    ("keywords:frequency", {"keyword": "cat", "frequency": 2, "relation": "at least"}, "cat cat", "one cat"),
    ("keywords:forbidden_words", {"forbidden_words": ["bad"]}, "all good", "this is bad"),
    ("keywords:letter_frequency", {"letter": "z", "let_frequency": 2, "let_relation": "less than"}, "zap", "zzz"),
    ("length_constraints:number_words", {"num_words": 5, "relation": "less than"}, "one two", "a b c d e f"),
    ("length_constraints:number_sentences", {"num_sentences": 2, "relation": "at least"}, "Hi. Bye.", "Hi."),
    ("length_constraints:number_paragraphs", {"num_paragraphs": 2}, "a\n***\nb", "a b"),
    ("length_constraints:nth_paragraph_first_word", {"num_paragraphs": 2, "nth_paragraph": 2, "first_word": "so"},
     "first\n\nSo, second", "first\n\nthen second"),
    ("detectable_format:json_format", {}, '```json\n{"a": 1}\n```', "{a: 1}"),
    ("detectable_format:title", {}, "<<My Title>>\ntext", "My Title"),
    ("detectable_format:number_bullet_lists", {"num_bullets": 2}, "* a\n* b", "* a"),
    ("detectable_format:number_highlighted_sections", {"num_highlights": 2}, "*one* and *two*", "*one*"),
    ("detectable_format:multiple_sections", {"section_spliter": "Section", "num_sections": 2},
     "Section 1\na\nSection 2\nb", "Section 1\na"),
    ("detectable_format:constrained_response", {}, "My answer is yes.", "yes"),
    ("detectable_content:postscript", {"postscript_marker": "P.S."}, "hello\nP.S. bye", "hello"),
    ("detectable_content:number_placeholders", {"num_placeholders": 1}, "at [address]", "at home"),
    ("change_case:english_lowercase", {}, "this is an english sentence about the weather today",
     "This is an English sentence about the weather today"),
    ("change_case:english_capital", {}, "THIS IS AN ENGLISH SENTENCE ABOUT THE WEATHER", "This is mixed case"),
    ("change_case:capital_word_frequency", {"capital_frequency": 2, "capital_relation": "at least"},
     "WOW this is BIG", "WOW this"),
    ("startend:end_checker", {"end_phrase": "Any other questions?"}, "ok. Any other questions?", "ok."),
    ("startend:quotation", {}, '"quoted"', "plain"),
    ("punctuation:no_comma", {}, "no commas here", "a, b"),
    ("combination:two_responses", {}, "first\n******\nsecond", "only one"),
    ("combination:repeat_prompt", {"prompt_to_repeat": "Write a poem"}, "Write a poem\nroses", "roses"),
    ("language:response_language", {"language": "de"}, "Das ist ein kurzer deutscher Satz über das Wetter.",
     "This is a short English sentence about the weather."),
])
def test_each_instruction(iid, kwargs, good, bad):
    assert score("ifeval", good, ref((iid, kwargs))) == 1.0
    assert score("ifeval", bad, ref((iid, kwargs))) == 0.0


def test_all_must_hold_and_results_are_per_instruction():
    reference = ref(("punctuation:no_comma", {}), ("keywords:existence", {"keywords": ["sun"]}))
    res = score_detailed("ifeval", "the sun, rising", reference)
    assert res.score == 0.0 and res.meta["instructions"] == {"punctuation:no_comma": False, "keywords:existence": True}


def test_loose_mode_ignores_first_and_last_lines_and_stars():
    reference = ref(("startend:quotation", {}))
    response = 'Sure, here it is:\n"quoted"'
    assert score("ifeval", response, reference) == 0.0
    assert score("ifeval", response, reference, mode="loose") == 1.0


def test_reference_checks():
    assert verify_reference("ifeval", ref(("punctuation:no_comma", {})))[0]
    assert not verify_reference("ifeval", ref(("made:up", {})))[0]
    assert not verify_reference("ifeval", "not a dict")[0]
