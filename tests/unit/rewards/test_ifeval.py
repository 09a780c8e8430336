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


@pytest.mark.parametrize(("iid", "kwargs", "response", "expected"), [
    ("detectable_format:number_bullet_lists", {"num_bullets": 3}, "* **A**: x\n* **B**: y\n* **C**: z", 1.0),
    ("detectable_format:number_bullet_lists", {"num_bullets": 2}, "*a\n-b", 1.0),
    ("detectable_format:number_bullet_lists", {"num_bullets": 2}, "* a\n* b\n---", 1.0),  # a rule is no bullet
    ("keywords:forbidden_words", {"forbidden_words": ["c++"]}, "I code in C++.", 0.0),
    ("keywords:forbidden_words", {"forbidden_words": ["c++"]}, "I code in c.", 1.0),
    ("combination:two_responses", {}, "******\nA\n******\nB", 1.0),
    ("change_case:capital_word_frequency", {"capital_frequency": 2, "capital_relation": "less than"},
     "the U.S.A. is AI-POWERED", 0.0),
    ("change_case:capital_word_frequency", {"capital_frequency": 3, "capital_relation": "less than"},
     "the U.S.A. is AI-POWERED", 1.0),
    ("length_constraints:number_sentences", {"num_sentences": 2, "relation": "at least"}, 'He said "go." We went.',
     1.0),
    ("language:response_language", {"language": "zh"}, "今天天气很好，我们一起去公园散步吧。", 1.0),
    ("language:response_language", {"language": "de"}, "12345 !!!", 0.0),
    ("change_case:english_lowercase", {}, "12345 !!!", 0.0),
])
def test_known_disagreement_classes(iid, kwargs, response, expected):
    assert score("ifeval", response, ref((iid, kwargs))) == expected


@pytest.mark.parametrize("reference", [
    {"instruction_id_list": ["keywords:frequency"], "kwargs": [{"keyword": "a"}]},  # missing frequency/relation
    {"instruction_id_list": ["keywords:frequency"], "kwargs": [{"keyword": "a", "frequency": 1, "relation": "most"}]},
    {"instruction_id_list": ["length_constraints:number_words"], "kwargs": [{"num_words": "many",
                                                                             "relation": "at least"}]},
    {"instruction_id_list": ["punctuation:no_comma"], "kwargs": [{"bogus": 1}]},
    {"instruction_id_list": ["made:up"], "kwargs": [{}]},
    {"instruction_id_list": ["punctuation:no_comma", "startend:quotation"], "kwargs": [{}]},
    {"instruction_id_list": []},
    {"instruction_id_list": ["punctuation:no_comma"], "kwargs": 5},
    None,
])
def test_unusable_reference_scores_zero_with_a_reason(reference):
    res = score_detailed("ifeval", "some response", reference)
    assert res.score == 0.0 and res.reason.startswith("bad reference") and res.meta["unparsable"] == "reference"


def test_hf_style_kwargs_with_none_values_are_accepted():
    kwargs = {"num_highlights": None, "relation": None, "num_words": 3, "num_placeholders": None}
    kwargs["relation"] = "at least"
    assert score("ifeval", "one two three", ref(("length_constraints:number_words", kwargs))) == 1.0


def test_deeply_nested_json_is_not_followed_and_does_not_raise():
    res = score_detailed("ifeval", "[" * 100000, ref(("detectable_format:json_format", {})))
    assert res.score == 0.0
