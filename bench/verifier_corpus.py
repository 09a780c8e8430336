"""The corpus the verifiers are measured on: IFEval responses and math answers, written to
tests/data/verifier_corpus/{ifeval,math}.jsonl.

    python bench/verifier_corpus.py [--benchmarks DIR] [--random 300 --seed 2024 --out DIR]

--benchmarks defaults to the benchmark files shipped with ringctl (ringctl/data/benchmarks).

IFEval cases are hand-written responses for every instruction id of the IFEval data set, with the kwargs as
IFEval writes them: answers that follow and answers that do not, and the edge cases where implementations
disagree (markdown bullets, separators, symbols in keywords, case checks, sentence ends). Each case says what
its author meant (``intended``) and, where ringctl deliberately departs from the reference, which entry of
``ringctl.rewards.ifeval.DEVIATIONS`` applies. The reference's own verdicts are added by
``bench/verifier_agreement.py --update-corpus``, which runs lm-evaluation-harness's IFEval code.

Math cases start from the real references of MATH-500, AIME 2024, AMC 2023 and GSM8K: the reference itself,
formatting variants that must be accepted (spacing, \\dfrac, \\left/\\right, $...$, units, degrees, percent,
thousands separators, e-notation, ``x = ...``, reordered sets) and wrong answers that must be rejected (a
changed number, a swapped tuple, digits split by a space, a dropped part). ``label`` is the correct verdict.
The script is deterministic; regenerating keeps the reference verdicts already stored for unchanged cases.
"""

from __future__ import annotations

import argparse
import json
import random
import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CORPUS_DIR = REPO / "tests" / "data" / "verifier_corpus"

# ------------------------------------------------------------------------------------------------ IFEval

LOREM = ("The river town wakes slowly. Fishermen check their nets before the sun is up. Children run to the "
         "bakery for warm bread. By noon the market is full of voices and color. In the evening the lamps come "
         "on one by one.")
ESSAY_SENTENCES = [
    "Renewable energy has moved from the margins to the center of national policy.",
    "Solar panels now cost a fraction of what they did a decade ago.",
    "Wind farms supply a growing share of electricity in many countries.",
    "Storage remains the hardest problem, because demand does not follow the weather.",
    "Batteries are improving quickly, but grid-scale storage is still expensive.",
    "Governments can help by funding research and simplifying permits.",
    "Households can help by insulating homes and shifting use to off-peak hours.",
    "The transition will take decades, yet its direction is clear.",
    "Each year of delay makes the eventual change more costly.",
    "A steady, predictable policy is worth more than a dramatic one.",
    "Investors respond to long-term signals rather than short-term subsidies.",
    "Cities are often faster than nations at putting plans into practice.",
]


def _words(n: int, seed: int = 0) -> str:
    vocab = ("apple river stone light window garden quiet market yellow journey morning table paper music "
             "friend simple water forest letter bridge").split()
    rng = random.Random(seed)
    return " ".join(rng.choice(vocab) for _ in range(n))


def _sentences(n: int) -> str:
    return " ".join(ESSAY_SENTENCES[i % len(ESSAY_SENTENCES)] for i in range(n))


def _case(iid, kwargs, response, intended, note="", deviation=None, ids=None, kwargs_list=None, prompt=None):
    ids = ids or [iid]
    kwargs_list = kwargs_list or [kwargs]
    return {"instruction_id_list": ids, "kwargs": kwargs_list, "prompt": prompt or "Write a response.",
            "response": response, "intended": intended, "deviation": deviation, "note": note}


def ifeval_cases(random_cases: int = 300, seed: int = 2024) -> list[dict]:
    c: list[dict] = []
    add = c.append

    # keywords:existence
    iid = "keywords:existence"
    add(_case(iid, {"keywords": ["river", "stone"]}, LOREM.replace("bread", "bread made of stone flour"), True))
    add(_case(iid, {"keywords": ["river", "stone"]}, LOREM, False, "one keyword missing"))
    add(_case(iid, {"keywords": ["River"]}, "the RIVER runs", True, "case-insensitive"))
    add(_case(iid, {"keywords": ["art"]}, "A short start.", True, "substring match, as the reference does"))
    add(_case(iid, {"keywords": ["organic", "sustainable"]}, "We farm **sustainable** and organic crops.", True))
    add(_case(iid, {"keywords": ["e.g."]}, "Fresh eggs for breakfast.", False, "literal dots", "literal_kwargs"))
    add(_case(iid, {"keywords": ["e.g."]}, "Fruit, e.g. apples.", True, "literal dots"))
    add(_case(iid, {"keywords": ["C++"]}, "I write C++ at work.", True, "symbol keyword"))
    add(_case(iid, {"keywords": ["(beta)"]}, "The beta release is out.", False, "parentheses are text",
              "literal_kwargs"))

    # keywords:frequency
    iid = "keywords:frequency"
    add(_case(iid, {"keyword": "cat", "frequency": 2, "relation": "at least"}, "A cat met another cat.", True))
    add(_case(iid, {"keyword": "cat", "frequency": 2, "relation": "at least"}, "A cat met a dog.", False))
    add(_case(iid, {"keyword": "cat", "frequency": 3, "relation": "less than"}, "cat cat", True))
    add(_case(iid, {"keyword": "cat", "frequency": 3, "relation": "less than"}, "cat, cat, cat!", False))
    add(_case(iid, {"keyword": "dog", "frequency": 2, "relation": "at least"}, "Dogs and DOG food", True,
              "substring and case-insensitive like the reference"))
    add(_case(iid, {"keyword": " remarkable ", "frequency": 1, "relation": "at least"}, "A remarkable day.", True,
              "keyword is stripped"))
    add(_case(iid, {"keyword": "e.g.", "frequency": 2, "relation": "at least"}, "eggs, eager", False,
              "literal dots", "literal_kwargs"))
    add(_case(iid, {"keyword": "e.g.", "frequency": 2, "relation": "at least"}, "e.g. this, e.g. that", True))
    add(_case(iid, {"keyword": "Q&A", "frequency": 1, "relation": "at least"}, "Join the Q&A session.", True))

    # keywords:forbidden_words
    iid = "keywords:forbidden_words"
    add(_case(iid, {"forbidden_words": ["bad", "evil"]}, "All is good here.", True))
    add(_case(iid, {"forbidden_words": ["bad", "evil"]}, "That was a bad idea.", False))
    add(_case(iid, {"forbidden_words": ["bad"]}, "The badge is shiny.", True, "word boundary"))
    add(_case(iid, {"forbidden_words": ["bad"]}, "BAD weather.", False, "case-insensitive"))
    add(_case(iid, {"forbidden_words": ["c++"]}, "I code in C++ daily.", False, "symbol at the end"))
    add(_case(iid, {"forbidden_words": ["c++"]}, "I code in c and python.", True,
              "a plain c is not c++ (the reference's unescaped pattern finds it)", "forbidden_word_symbol_edge"))
    add(_case(iid, {"forbidden_words": [".net"]}, "We build on .NET today.", False, "symbol at the start",
              "forbidden_word_symbol_edge"))
    add(_case(iid, {"forbidden_words": ["u.s."]}, "We saw Ursa Major.", True, "dots are literal", "literal_kwargs"))
    add(_case(iid, {"forbidden_words": ["happy", "sad"]}, "Happiness matters.", True))
    add(_case(iid, {"forbidden_words": ["happy", "sad"]}, "I am *sad* today.", False, "inside emphasis"))

    # keywords:letter_frequency
    iid = "keywords:letter_frequency"
    add(_case(iid, {"letter": "z", "let_frequency": 2, "let_relation": "less than"}, "zap", True))
    add(_case(iid, {"letter": "z", "let_frequency": 2, "let_relation": "less than"}, "Zig zag", False))
    add(_case(iid, {"letter": "q", "let_frequency": 3, "let_relation": "at least"}, "Quick quiet quail", True))
    add(_case(iid, {"letter": "q", "let_frequency": 3, "let_relation": "at least"}, "quick quiet", False))
    add(_case(iid, {"letter": "e", "let_frequency": 10, "let_relation": "at least"}, LOREM, True))
    add(_case(iid, {"letter": "A", "let_frequency": 1, "let_relation": "at least"}, "banana", True,
              "letter is lowercased"))

    # language:response_language
    iid = "language:response_language"
    add(_case(iid, {"language": "de"}, "Das ist ein kurzer deutscher Satz über das Wetter von heute.", True))
    add(_case(iid, {"language": "de"}, "This is a short English sentence about the weather today.", False))
    add(_case(iid, {"language": "fr"}, "Bonjour, je voudrais réserver une table pour deux personnes ce soir.", True))
    add(_case(iid, {"language": "es"}, "La biblioteca abre a las nueve de la mañana y cierra por la noche.", True))
    add(_case(iid, {"language": "hi"}, "भारत एक विशाल देश है जिसकी संस्कृति बहुत पुरानी और समृद्ध है।", True))
    add(_case(iid, {"language": "ru"}, "Сегодня мы пошли в парк и долго гуляли вдоль реки.", True))
    add(_case(iid, {"language": "ja"}, "今日はとても良い天気なので、公園を散歩しました。", True))
    add(_case(iid, {"language": "ko"}, "오늘은 날씨가 좋아서 친구들과 공원에서 산책을 했습니다.", True))
    add(_case(iid, {"language": "ar"}, "ذهبنا إلى السوق في الصباح واشترينا الخبز والفاكهة.", True))
    add(_case(iid, {"language": "fa"}, "امروز هوا بسیار خوب است و ما به پارک رفتیم تا قدم بزنیم.", True))
    add(_case(iid, {"language": "vi"}, "Hôm nay trời rất đẹp nên chúng tôi đã đi dạo trong công viên.", True))
    add(_case(iid, {"language": "sw"}, "Leo tulienda sokoni kununua matunda na mboga kwa ajili ya chakula cha jioni.",
              True))
    add(_case(iid, {"language": "it"}, "Oggi siamo andati al mercato per comprare frutta e verdura fresca.", True))
    add(_case(iid, {"language": "pt"}, "Hoje fomos ao mercado comprar frutas e legumes frescos para o jantar.", True))
    add(_case(iid, {"language": "bn"}, "আজ আমরা বাজারে গিয়ে তাজা ফল ও সবজি কিনেছি।", True))
    add(_case(iid, {"language": "ta"}, "இன்று நாங்கள் சந்தைக்குச் சென்று புதிய பழங்களை வாங்கினோம்.", True))
    add(_case(iid, {"language": "te"}, "ఈ రోజు మేము మార్కెట్‌కు వెళ్లి తాజా పండ్లు కొన్నాము.", True))
    add(_case(iid, {"language": "kn"}, "ಇಂದು ನಾವು ಮಾರುಕಟ್ಟೆಗೆ ಹೋಗಿ ತಾಜಾ ಹಣ್ಣುಗಳನ್ನು ಖರೀದಿಸಿದೆವು.", True))
    add(_case(iid, {"language": "mr"}, "आज आम्ही बाजारात जाऊन ताजी फळे आणि भाज्या विकत घेतल्या.", True))
    add(_case(iid, {"language": "pa"}, "ਅੱਜ ਅਸੀਂ ਬਾਜ਼ਾਰ ਗਏ ਅਤੇ ਤਾਜ਼ੇ ਫਲ ਖਰੀਦੇ।", True))
    add(_case(iid, {"language": "gu"}, "આજે અમે બજારમાં ગયા અને તાજા ફળો ખરીદ્યા.", True))
    add(_case(iid, {"language": "ne"}, "आज हामी बजार गयौं र ताजा फलफूल किन्यौं। हामीलाई धेरै रमाइलो लाग्यो।", True))
    add(_case(iid, {"language": "th"}, "วันนี้เราไปตลาดและซื้อผลไม้สดกลับบ้าน", True))
    add(_case(iid, {"language": "ur"}, "آج ہم بازار گئے اور تازہ پھل خریدے۔", True))
    add(_case(iid, {"language": "fi"}, "Tänään kävimme torilla ostamassa tuoreita hedelmiä ja vihanneksia.", True))
    add(_case(iid, {"language": "pl"}, "Dzisiaj poszliśmy na targ kupić świeże owoce i warzywa na obiad.", True))
    add(_case(iid, {"language": "uk"}, "Сьогодні ми ходили на ринок купувати свіжі фрукти та овочі.", True))
    add(_case(iid, {"language": "bg"}, "Днес отидохме на пазара да купим пресни плодове и зеленчуци за вечеря.", True))
    add(_case(iid, {"language": "he"}, "היום הלכנו לשוק וקנינו פירות וירקות טריים לארוחת הערב.", True))
    add(_case(iid, {"language": "zh"}, "今天天气很好，我们一起去公园散步吧。", True, "langdetect says zh-cn",
              "chinese_code"))
    add(_case(iid, {"language": "zh"}, "This answer is in English, not in Chinese at all.", False,
              "the reference cannot take 'zh' at all (KeyError)", "chinese_code"))
    add(_case(iid, {"language": "de"}, "12345 !!!", False, "no letters: langdetect cannot decide",
              "langdetect_failure"))
    add(_case(iid, {"language": "en"}, "The committee approved the new budget after a long debate.", True))
    add(_case(iid, {"language": "en"}, "El comité aprobó el nuevo presupuesto después de un largo debate.", False))

    # length_constraints:number_sentences
    iid = "length_constraints:number_sentences"
    for n, rel, k, intended in [(3, "at least", 3, True), (3, "at least", 2, False), (5, "less than", 4, True),
                                (5, "less than", 5, False), (10, "at least", 12, True), (2, "less than", 1, True)]:
        add(_case(iid, {"num_sentences": n, "relation": rel}, _sentences(k), intended))
    add(_case(iid, {"num_sentences": 3, "relation": "at least"}, 'He said "stop." She left. They waited.', True,
              'a sentence ending in ."'))
    add(_case(iid, {"num_sentences": 3, "relation": "less than"}, "Mr. Smith met Dr. Jones at 3 p.m. today. Fine.",
              True, "abbreviations do not end sentences"))
    add(_case(iid, {"num_sentences": 4, "relation": "at least"}, "Wait... what? Really! Yes.", False,
              "Punkt keeps 'Wait... what?' together"))
    add(_case(iid, {"num_sentences": 2, "relation": "at least"}, "The U.S.A. is large. It has 50 states.", True))
    add(_case(iid, {"num_sentences": 3, "relation": "at least"}, "* First point.\n* Second point.\n* Third point.",
              True, "bullets"))
    add(_case(iid, {"num_sentences": 2, "relation": "less than"}, "Version 3.5 shipped on time. It works.", False,
              "a decimal number"))

    # length_constraints:number_paragraphs
    iid = "length_constraints:number_paragraphs"
    add(_case(iid, {"num_paragraphs": 2}, "First paragraph.\n***\nSecond paragraph.", True))
    add(_case(iid, {"num_paragraphs": 3}, "One.\n\n***\n\nTwo.\n\n***\n\nThree.", True))
    add(_case(iid, {"num_paragraphs": 3}, "One.\n***\nTwo.", False))
    add(_case(iid, {"num_paragraphs": 2}, "***\nOne.\n***\nTwo.\n***", True, "leading and trailing separators"))
    add(_case(iid, {"num_paragraphs": 2}, "One.\n***\n***\nTwo.", False, "an empty paragraph"))
    add(_case(iid, {"num_paragraphs": 2}, "One.\n\nTwo.", False, "blank lines are not the separator"))
    add(_case(iid, {"num_paragraphs": 4}, "\n***\n".join(ESSAY_SENTENCES[:4]), True))

    # length_constraints:number_words
    iid = "length_constraints:number_words"
    for n, rel, k, intended in [(100, "at least", 120, True), (100, "at least", 99, False), (50, "less than", 49, True),
                                (50, "less than", 50, False), (300, "at least", 310, True), (20, "less than", 5, True)]:
        add(_case(iid, {"num_words": n, "relation": rel}, _words(k, seed=n + k), intended))
    add(_case(iid, {"num_words": 5, "relation": "less than"}, "state-of-the-art", True,
              "hyphens split words (\\w+)"))
    add(_case(iid, {"num_words": 3, "relation": "at least"}, "don't stop", True, "an apostrophe splits a word"))

    # length_constraints:nth_paragraph_first_word
    iid = "length_constraints:nth_paragraph_first_word"
    kw = {"num_paragraphs": 2, "nth_paragraph": 2, "first_word": "so"}
    add(_case(iid, kw, "First idea.\n\nSo, the second.", True))
    add(_case(iid, kw, "First idea.\n\nThen the second.", False))
    add(_case(iid, kw, "First idea.\n\nSo the second.\n\nA third.", False, "three paragraphs"))
    add(_case(iid, kw, "First idea.\n\n\"So\" the second.", True, "leading quote"))
    add(_case(iid, kw, "First idea.\n\n**So** the second.", False, "bold first word is not the word in strict mode"))
    add(_case(iid, {"num_paragraphs": 3, "nth_paragraph": 1, "first_word": "president"},
              "President Lincoln spoke.\n\nThe crowd listened.\n\nHistory remembers.", True))
    add(_case(iid, {"num_paragraphs": 2, "nth_paragraph": 1, "first_word": "so"},
              "\n\nSo it begins.\n\nThe end.", True, "a leading blank line", "nth_paragraph_leading_blank"))

    # detectable_content:number_placeholders
    iid = "detectable_content:number_placeholders"
    add(_case(iid, {"num_placeholders": 2}, "Send it to [name] at [address].", True))
    add(_case(iid, {"num_placeholders": 2}, "Send it to [name].", False))
    add(_case(iid, {"num_placeholders": 1}, "Dear [recipient's name],\nThanks.", True))
    add(_case(iid, {"num_placeholders": 3}, "[a] [b]", False))
    add(_case(iid, {"num_placeholders": 1}, "A markdown [link](http://x.org).", True, "brackets of a link count"))

    # detectable_content:postscript
    iid = "detectable_content:postscript"
    add(_case(iid, {"postscript_marker": "P.S."}, "Hello.\nP.S. See you soon.", True))
    add(_case(iid, {"postscript_marker": "P.S."}, "Hello.\n\nps see you soon.", False))
    add(_case(iid, {"postscript_marker": "P.S."}, "Hello.\n\np. s. see you.", True, "spacing variant"))
    add(_case(iid, {"postscript_marker": "P.P.S"}, "Hello.\nP.S. one\nP.P.S two", True))
    add(_case(iid, {"postscript_marker": "P.P.S"}, "Hello.\nP.S. one", False))
    add(_case(iid, {"postscript_marker": "P.S."}, "Hello.\n**P.S.** See you.", True, "the marker may be bold"))
    add(_case(iid, {"postscript_marker": "Note:"}, "Text.\nNote: important.", True))
    add(_case(iid, {"postscript_marker": "P.S"}, "Text.\npas de deux.", False, "marker dots are literal",
              "literal_kwargs"))

    # detectable_format:number_bullet_lists
    iid = "detectable_format:number_bullet_lists"
    add(_case(iid, {"num_bullets": 2}, "* apples\n* pears", True))
    add(_case(iid, {"num_bullets": 3}, "* apples\n* pears", False))
    add(_case(iid, {"num_bullets": 3}, "- one\n- two\n- three", True, "dash bullets"))
    add(_case(iid, {"num_bullets": 3}, "* **Speed**: fast\n* **Cost**: low\n* **Risk**: none", True,
              "'* **Term**: ...', the most common LLM list"))
    add(_case(iid, {"num_bullets": 2}, "Intro:\n  * nested one\n  * nested two", True, "indented bullets"))
    add(_case(iid, {"num_bullets": 2}, "*apples\n*pears", True, "no space after the marker"))
    add(_case(iid, {"num_bullets": 2}, "-apples\n-pears", True, "no space after the dash"))
    add(_case(iid, {"num_bullets": 2}, "**Heading**\n* a\n* b", True, "a bold line is not a bullet"))
    add(_case(iid, {"num_bullets": 2}, "* a\n* b\n---\nend", True, "a horizontal rule",
              "bullet_horizontal_rule"))
    add(_case(iid, {"num_bullets": 2}, "*Note:* read this\n* a\n* b", True, "an italic line",
              "bullet_italic_line"))
    add(_case(iid, {"num_bullets": 2}, "1. one\n2. two", False, "numbered lists are not bullets"))
    add(_case(iid, {"num_bullets": 2}, "* a\n\n* b", True, "blank line between"))
    add(_case(iid, {"num_bullets": 4}, "* Point one.\n* Point two.\n  - sub a\n  - sub b", True))

    # detectable_format:constrained_response
    iid = "detectable_format:constrained_response"
    add(_case(iid, {}, "My answer is yes.", True))
    add(_case(iid, {}, "After thinking, My answer is no.", True))
    add(_case(iid, {}, "My answer is Yes.", False, "case matters"))
    add(_case(iid, {}, "yes", False))
    add(_case(iid, {}, "  My answer is maybe.  ", True))

    # detectable_format:number_highlighted_sections
    iid = "detectable_format:number_highlighted_sections"
    add(_case(iid, {"num_highlights": 2}, "*one* and *two*", True))
    add(_case(iid, {"num_highlights": 2}, "*one* only", False))
    add(_case(iid, {"num_highlights": 2}, "**bold one** and **bold two**", True))
    add(_case(iid, {"num_highlights": 1}, "** ** nothing", False, "empty highlight"))
    add(_case(iid, {"num_highlights": 3}, "*a*\n*b*\n*c*", True))
    add(_case(iid, {"num_highlights": 2}, "* item one\n* item two", False, "bullets are not highlights"))
    add(_case(iid, {"num_highlights": 3}, "## *Part 1*\ntext\n## *Part 2*\ntext\n## *Part 3*", True))

    # detectable_format:multiple_sections
    iid = "detectable_format:multiple_sections"
    add(_case(iid, {"section_spliter": "Section", "num_sections": 2}, "Section 1\nIntro\nSection 2\nBody", True))
    add(_case(iid, {"section_spliter": "Section", "num_sections": 3}, "Section 1\nIntro\nSection 2\nBody", False))
    add(_case(iid, {"section_spliter": "SECTION", "num_sections": 2}, "Section 1\nIntro\nSection 2\nBody", False,
              "case matters"))
    add(_case(iid, {"section_spliter": "PARAGRAPH", "num_sections": 2}, "PARAGRAPH 1\nx\nPARAGRAPH 2\ny", True))
    add(_case(iid, {"section_spliter": "Day", "num_sections": 3}, "Day 1: arrive\nDay 2: walk\nDay 3: leave", True))
    add(_case(iid, {"section_spliter": "Part", "num_sections": 2}, "**Part 1**\nx\n**Part 2**\ny", True))
    add(_case(iid, {"section_spliter": "Sec.", "num_sections": 2}, "Secs1 a Secs2 b", False,
              "the splitter's dot is literal", "literal_kwargs"))

    # detectable_format:json_format
    iid = "detectable_format:json_format"
    add(_case(iid, {}, '{"name": "Ada", "age": 36}', True))
    add(_case(iid, {}, '```json\n{"name": "Ada"}\n```', True))
    add(_case(iid, {}, '```JSON\n[1, 2, 3]\n```', True))
    add(_case(iid, {}, '```\n{"a": 1}\n```', True))
    add(_case(iid, {}, "{name: 'Ada'}", False))
    add(_case(iid, {}, 'Here is the JSON:\n{"a": 1}', False, "prose before the JSON"))
    add(_case(iid, {}, '```python\n{"a": 1}\n```', False))

    # detectable_format:title
    iid = "detectable_format:title"
    add(_case(iid, {}, "<<The Long Road>>\nOnce upon a time.", True))
    add(_case(iid, {}, "The Long Road\nOnce upon a time.", False))
    add(_case(iid, {}, "<< >>\ntext", False, "empty title"))
    add(_case(iid, {}, "<<Title\nsplit>>", False, "a title on two lines"))
    add(_case(iid, {}, "Poem: <<Ode to Rain>>", True))

    # combination:two_responses
    iid = "combination:two_responses"
    add(_case(iid, {}, "First answer.\n******\nSecond answer.", True))
    add(_case(iid, {}, "Only one answer.", False))
    add(_case(iid, {}, "Same.\n******\nSame.", False, "two equal responses"))
    add(_case(iid, {}, "******\nFirst.\n******\nSecond.", True, "a leading separator"))
    add(_case(iid, {}, "First.\n******\nSecond.\n******", True, "a trailing separator"))
    add(_case(iid, {}, "A.\n******\n\n******\nB.", False, "an empty response in the middle"))
    add(_case(iid, {}, "A.\n******\nB.\n******\nC.", False, "three responses"))

    # combination:repeat_prompt
    iid = "combination:repeat_prompt"
    p = "Write a haiku about the sea. Do not use commas."
    add(_case(iid, {"prompt_to_repeat": p}, p + "\nWaves fold into foam", True))
    add(_case(iid, {"prompt_to_repeat": p}, "Waves fold into foam", False))
    add(_case(iid, {"prompt_to_repeat": p}, "  " + p.lower() + "\nWaves", True, "case and leading space"))
    add(_case(iid, {"prompt_to_repeat": p}, "Sure! " + p + "\nWaves", False, "something before the prompt"))

    # startend:end_checker
    iid = "startend:end_checker"
    add(_case(iid, {"end_phrase": "Any other questions?"}, "Here it is. Any other questions?", True))
    add(_case(iid, {"end_phrase": "Any other questions?"}, "Here it is. Any other questions? ", True))
    add(_case(iid, {"end_phrase": "Any other questions?"}, "Here it is. any other questions?", True,
              "case-insensitive"))
    add(_case(iid, {"end_phrase": "Any other questions?"}, "Any other questions? Thanks.", False))
    add(_case(iid, {"end_phrase": "Is there anything else I can help with?"},
              '"Done. Is there anything else I can help with?"', True, "quotes are stripped"))
    add(_case(iid, {"end_phrase": "Peace."}, "Goodbye and peace", False, "missing period"))

    # startend:quotation
    iid = "startend:quotation"
    add(_case(iid, {}, '"The whole answer is quoted."', True))
    add(_case(iid, {}, 'The answer is "partly" quoted.', False))
    add(_case(iid, {}, '  "quoted with spaces"  \n', True))
    add(_case(iid, {}, '"', False, "one quote"))
    add(_case(iid, {}, "\u201cCurly quotes\u201d", False, "curly quotes are not the ASCII quote"))

    # punctuation:no_comma
    iid = "punctuation:no_comma"
    add(_case(iid, {}, "No commas here at all.", True))
    add(_case(iid, {}, "One, two.", False))
    add(_case(iid, {}, "Numbers like 1,000 count.", False))
    add(_case(iid, {}, "A fullwidth comma\uff0c is another character.", True))

    # change_case:english_lowercase
    iid = "change_case:english_lowercase"
    add(_case(iid, {}, "this is an english sentence about the weather today.", True))
    add(_case(iid, {}, "This is an English sentence about the weather today.", False))
    add(_case(iid, {}, "all lowercase text about the city's 3 parks and 2 rivers.", True, "digits have no case"))
    add(_case(iid, {}, "das ist ein deutscher satz über das wetter und die stadt.", False, "lowercase German"))
    add(_case(iid, {}, "12345 !!!", False, "no cased letter at all"))
    add(_case(iid, {}, "the café serves crème brûlée on sundays and holidays.", True, "accented letters"))
    add(_case(iid, {}, "the weather is nice — ok ✓ we go to the park today.", True, "symbols without case"))

    # change_case:english_capital
    iid = "change_case:english_capital"
    add(_case(iid, {}, "THIS IS AN ENGLISH SENTENCE ABOUT THE WEATHER TODAY.", True))
    add(_case(iid, {}, "This Is Mixed Case About The Weather.", False))
    add(_case(iid, {}, "THE 3 RIVERS AND 2 PARKS OF THE CITY ARE BEAUTIFUL!", True, "digits have no case"))
    add(_case(iid, {}, "DAS IST EIN DEUTSCHER SATZ ÜBER DAS WETTER UND DIE STADT.", False, "German capitals"))
    add(_case(iid, {}, "WE LOVE THE ♥ SYMBOL AND THE WEATHER IN THE CITY TODAY.", True, "a symbol"))
    add(_case(iid, {}, "THE STRASSE IS NAMED ß IN GERMAN BUT THIS TEXT IS ENGLISH.", False,
              "ß is lowercase (its capital is SS)"))

    # change_case:capital_word_frequency
    iid = "change_case:capital_word_frequency"
    add(_case(iid, {"capital_frequency": 2, "capital_relation": "at least"}, "WOW this is BIG", True))
    add(_case(iid, {"capital_frequency": 2, "capital_relation": "at least"}, "WOW this is big", False))
    add(_case(iid, {"capital_frequency": 3, "capital_relation": "less than"}, "the U.S.A. is big", True,
              "U.S.A. is one word"))
    add(_case(iid, {"capital_frequency": 2, "capital_relation": "less than"}, "We ran an A/B test on NASA data.",
              False, "A/B is one word"))
    add(_case(iid, {"capital_frequency": 2, "capital_relation": "less than"}, "This is AI-POWERED software.", True,
              "AI-POWERED is one word"))
    add(_case(iid, {"capital_frequency": 1, "capital_relation": "at least"}, "I think so.", True,
              "'I' is a capital word"))
    add(_case(iid, {"capital_frequency": 4, "capital_relation": "at least"}, "USA, UK, EU and UN met.", True))
    add(_case(iid, {"capital_frequency": 2, "capital_relation": "at least"}, "DON'T STOP", True,
              "a contraction splits (DO, N'T, STOP)"))
    add(_case(iid, {"capital_frequency": 5, "capital_relation": "less than"},
              "Check the FAQ (section 3). The API, SDK and CLI docs are on the WEB.", False))

    # several instructions at once (prompt level)
    multi = [
        (["punctuation:no_comma", "keywords:existence"], [{}, {"keywords": ["sun"]}], "The sun rises early.", True),
        (["punctuation:no_comma", "keywords:existence"], [{}, {"keywords": ["sun"]}], "The sun, rising.", False),
        (["detectable_format:title", "detectable_format:number_bullet_lists"], [{}, {"num_bullets": 2}],
         "<<Plan>>\n* **Step one**: start\n* **Step two**: finish", True),
        (["change_case:english_lowercase", "length_constraints:number_words"],
         [{}, {"num_words": 10, "relation": "less than"}], "the cat sat on the mat today.", True),
        (["startend:quotation", "punctuation:no_comma"], [{}, {}], '"Hello there my friend"', True),
        (["detectable_content:postscript", "length_constraints:number_sentences"],
         [{"postscript_marker": "P.S."}, {"num_sentences": 2, "relation": "at least"}],
         "I will come. It will be fun.\nP.S. Bring snacks.", True),
        (["combination:two_responses", "keywords:forbidden_words"], [{}, {"forbidden_words": ["sorry"]}],
         "Option A here.\n******\nOption B, sorry.", False),
        (["detectable_format:json_format", "keywords:existence"], [{}, {"keywords": ["paris"]}],
         '```json\n{"city": "Paris"}\n```', True),
        (["change_case:english_capital", "detectable_content:number_placeholders"], [{}, {"num_placeholders": 1}],
         "PLEASE SEND THE PARCEL TO [ADDRESS] BEFORE FRIDAY MORNING.", True),
        (["length_constraints:number_paragraphs", "length_constraints:number_words"],
         [{"num_paragraphs": 2}, {"num_words": 8, "relation": "at least"}], "One two three.\n***\nFour five six.",
         False),
    ]
    for ids, kwargs_list, response, intended in multi:
        add(_case(None, None, response, intended, "several instructions", ids=ids, kwargs_list=kwargs_list))

    # loose mode matters: responses with a preamble line, a closing line, or markdown stars
    loose = [
        ("startend:quotation", {}, 'Sure, here it is:\n"The whole answer."'),
        ("detectable_format:json_format", {}, 'Here is the JSON you asked for:\n{"a": 1}\nHope this helps!'),
        ("detectable_content:postscript", {"postscript_marker": "P.S."}, "Hi.\n**P.S.** see you"),
        ("startend:end_checker", {"end_phrase": "Any other questions?"}, "Answer.\n**Any other questions?**"),
        ("length_constraints:nth_paragraph_first_word", {"num_paragraphs": 2, "nth_paragraph": 2, "first_word": "so"},
         "First.\n\n**So** second."),
        ("combination:repeat_prompt", {"prompt_to_repeat": "Name a fruit."}, "Sure!\nName a fruit.\nApple."),
        ("punctuation:no_comma", {}, "Okay, here you go:\nNo commas below this line\nThanks, bye"),
        ("detectable_format:title", {}, "Sure.\n<<My Poem>>\nRoses."),
    ]
    for iid, kwargs, response in loose:
        add(_case(iid, kwargs, response, False, "fails strict; loose mode can accept it"))

    c.extend(ifeval_random_cases(random_cases, seed))
    for i, case in enumerate(c):
        case["id"] = f"ifeval-{i:04d}"
    return c


# Fragments for the random responses: markdown and prose the way chat models write them. None of them triggers
# a documented deviation (no horizontal rules, no line opening with an emphasis span, no symbols in keywords),
# so on these cases ringctl must give the reference's verdict exactly.
_FRAGMENTS = [
    "Renewable energy is growing fast.", "Dr. Lee met Mr. Brown at 5 p.m. on Friday.",
    "The U.S.A. and the U.K. signed the deal.", "Prices rose by 3.5 percent last year.",
    '"Stop," she said. "We are late."', "Wait... is that right?", "It works! Really?",
    "NASA and the ESA launched a probe.", "Our AI-POWERED tool runs an A/B test.", "OK, let us begin.",
    "This is *important* to note.", "Read the **key idea** first.", "See [name] at [address].",
    "My answer is yes.", "My answer is no.", "I think so, but I am not sure.", "e.g. apples, pears and plums",
    "The river flows past the old stone bridge.", "Cats sleep a lot; dogs less so.",
    "Our team ships on Monday, Tuesday and Friday.",
]
_LINE_FORMS = [
    lambda t: t, lambda t: f"* {t}", lambda t: f"- {t}", lambda t: f"*{t.replace('*', '')}",
    lambda t: f"-{t}", lambda t: f"  * {t}", lambda t: f"* **Point**: {t}", lambda t: f"1. {t}",
    lambda t: f"**{t.replace('*', '')}**", lambda t: f"## {t}", lambda t: f"> {t}",
]
_SEPARATORS = ["\n", "\n\n", "\n***\n", " ", "\n******\n", "\n\n***\n\n"]
_EXTRAS = ["<<A Short Title>>", "Section 1", "SECTION 2", "P.S. Call me later.", "P.P.S Bring snacks.",
           '```json\n{"a": 1, "b": [2, 3]}\n```', "Any other questions?", "PARAGRAPH 3", "Day 2"]
_KEYWORDS = ["energy", "river", "test", "answer", "bridge", "cats", "apples", "team", "probe", "late"]


def _random_response(rng: random.Random) -> str:
    parts = []
    for _ in range(rng.randint(1, 7)):
        if rng.random() < 0.2:
            parts.append(rng.choice(_EXTRAS))
        else:
            parts.append(rng.choice(_LINE_FORMS)(rng.choice(_FRAGMENTS)))
    text = parts[0]
    for part in parts[1:]:
        text += rng.choice(_SEPARATORS) + part
    roll = rng.random()
    if roll < 0.08:
        text = text.lower()
    elif roll < 0.16:
        text = text.upper()
    elif roll < 0.22:
        text = f'"{text}"'
    elif roll < 0.28:
        text = "Sure! Here is my response:\n" + text + "\nHope this helps."
    return text


def _random_kwargs(iid: str, rng: random.Random) -> dict:
    rel = rng.choice(["less than", "at least"])
    n = rng.randint(1, 6)
    return {
        "keywords:existence": lambda: {"keywords": rng.sample(_KEYWORDS, rng.randint(1, 2))},
        "keywords:frequency": lambda: {"keyword": rng.choice(_KEYWORDS), "frequency": rng.randint(1, 3),
                                       "relation": rel},
        "keywords:forbidden_words": lambda: {"forbidden_words": rng.sample(_KEYWORDS, 2)},
        "keywords:letter_frequency": lambda: {"letter": rng.choice("aeiourstn"), "let_frequency": rng.randint(2, 20),
                                              "let_relation": rel},
        "language:response_language": lambda: {"language": rng.choice(["en", "en", "de", "fr"])},
        "length_constraints:number_sentences": lambda: {"num_sentences": n, "relation": rel},
        "length_constraints:number_paragraphs": lambda: {"num_paragraphs": rng.randint(1, 4)},
        "length_constraints:number_words": lambda: {"num_words": rng.randint(5, 60), "relation": rel},
        "length_constraints:nth_paragraph_first_word": lambda: {
            "num_paragraphs": rng.randint(1, 3), "nth_paragraph": 1,
            "first_word": rng.choice(["renewable", "the", "our", "dr", "section", "nasa", "point"])},
        "detectable_content:number_placeholders": lambda: {"num_placeholders": rng.randint(1, 3)},
        "detectable_content:postscript": lambda: {"postscript_marker": rng.choice(["P.S.", "P.P.S"])},
        "detectable_format:number_bullet_lists": lambda: {"num_bullets": rng.randint(1, 4)},
        "detectable_format:constrained_response": lambda: {},
        "detectable_format:number_highlighted_sections": lambda: {"num_highlights": rng.randint(1, 3)},
        "detectable_format:multiple_sections": lambda: {"section_spliter": rng.choice(["Section", "SECTION", "Day"]),
                                                        "num_sections": rng.randint(1, 2)},
        "detectable_format:json_format": lambda: {},
        "detectable_format:title": lambda: {},
        "combination:two_responses": lambda: {},
        "combination:repeat_prompt": lambda: {"prompt_to_repeat": rng.choice(["Sure!", "Renewable energy",
                                                                              "Write about energy."])},
        "startend:end_checker": lambda: {"end_phrase": rng.choice(["Any other questions?", "Hope this helps."])},
        "change_case:capital_word_frequency": lambda: {"capital_frequency": rng.randint(1, 6),
                                                       "capital_relation": rel},
        "change_case:english_capital": lambda: {},
        "change_case:english_lowercase": lambda: {},
        "punctuation:no_comma": lambda: {},
        "startend:quotation": lambda: {},
    }[iid]()


def ifeval_random_cases(n: int, seed: int = 2024) -> list[dict]:
    """Random markdown responses with random instructions (one to three each), seeded: the bulk of the
    differential test, where no author's expectation is involved (intended is None)."""
    from ringctl.rewards.ifeval import CHECKS, loose_variants

    rng = random.Random(seed)
    ids = sorted(CHECKS)
    out = []
    for k in range(n):
        chosen = [ids[k % len(ids)]] + rng.sample(ids, rng.randint(0, 2))
        chosen = list(dict.fromkeys(chosen))
        kwargs = [_random_kwargs(i, rng) for i in chosen]
        response = _random_response(rng)
        deviation = None
        if "language:response_language" in chosen and any(
                v.strip() and not re.search(r"[^\W\d_]", v) for v in loose_variants(response)):
            deviation = "langdetect_failure"  # a loose variant with no letters: the reference counts it followed
        out.append(_case(None, None, response, None, "random", deviation, ids=chosen, kwargs_list=kwargs))
    return out


# -------------------------------------------------------------------------------------------------- math


def _num_str(x: float) -> str:
    return str(int(x)) if float(x) == int(x) else repr(x)


def _perturb_number(ans: str, rng: random.Random) -> str | None:
    """A wrong answer: one number in the answer changed (the last one, +1, or a digit changed)."""
    unit = re.search(r"\\(?:text|mbox|mathrm)\{", ans)
    nums = [m for m in re.finditer(r"\d+(?:\.\d+)?", ans) if unit is None or m.end() <= unit.start()]
    if not nums:
        return None
    m = nums[-1]
    old = m.group(0)
    if "." in old:
        new = repr(round(float(old) + 1, 6))
    else:
        new = str(int(old) + rng.choice([1, 2, 3, 7, 10]))
    return ans[:m.start()] + new + ans[m.end():]


def _box(ans: str, style: int = 0) -> str:
    lead = ["The final answer is $\\boxed{%s}$.", "<think>\nLet me work it out.\n</think>\nSo the answer is "
            "\\boxed{%s}", "Therefore, \\boxed{%s}"][style % 3]
    return lead % ans


def math_cases(benchmarks: Path) -> list[dict]:
    rng = random.Random(13)
    cases: list[dict] = []

    def add(source, reference, answer, label, kind, style=None):
        style = len(cases) if style is None else style
        cases.append({"source": source, "reference": reference, "response": _box(answer, style),
                      "answer": answer, "label": label, "kind": kind})

    rows = [json.loads(line) for line in open(benchmarks / "math500.jsonl", encoding="utf-8")]
    for i, row in enumerate(rows):
        ref = row["answer"]
        add("math500", ref, ref, True, "identity")
        variant = _math_variant(ref)
        if variant and variant != ref:
            add("math500", ref, variant, True, "format")
        wrong = _perturb_number(ref, rng)
        if wrong and wrong != ref:
            add("math500", ref, wrong, False, "wrong_number")
        if i % 5 == 0:
            split = _split_digits(ref)
            if split:
                add("math500", ref, split, False, "wrong_split_digits")
        kind = _structure_kind(ref)
        if kind == "tuple":
            swapped = _swap_tuple(ref)
            if swapped:
                add("math500", ref, swapped, False, "wrong_tuple_order")
            dropped = _drop_part(ref)
            if dropped:
                add("math500", ref, dropped, False, "wrong_dropped_part")
        elif kind == "list":
            reordered = _reorder_list(ref)
            if reordered:
                add("math500", ref, reordered, True, "set_reordered")
            dropped = _drop_part(ref)
            if dropped:
                add("math500", ref, dropped, False, "wrong_dropped_part")
        elif kind == "interval":
            flipped = _flip_bracket(ref)
            if flipped:
                add("math500", ref, flipped, False, "wrong_interval_bracket")

    for name in ("aime24", "amc23"):
        for row in (json.loads(line) for line in open(benchmarks / f"{name}.jsonl", encoding="utf-8")):
            ref = _num_str(float(row["answer"])) if not isinstance(row["answer"], str) else row["answer"]
            add(name, ref, ref, True, "identity")
            add(name, ref, f"{ref}.0" if "." not in ref else ref + "0", True, "format")
            add(name, ref, str(int(float(ref)) + 1), False, "wrong_number")
            split = _split_digits(ref)
            if split:
                add(name, ref, split, False, "wrong_split_digits")

    gsm = [json.loads(line) for line in open(benchmarks / "gsm8k.jsonl", encoding="utf-8")]
    for i, row in enumerate(gsm[:400]):
        ref = row["answer"].split("####")[-1].strip()
        value = float(ref.replace(",", ""))
        add("gsm8k", ref, ref, True, "identity")
        if abs(value) >= 1000 and value == int(value):
            add("gsm8k", ref, f"{int(value):,}", True, "thousands")
            add("gsm8k", ref, f"{int(value):,}".replace(",", "{,}"), True, "thousands")
            add("gsm8k", ref, f"{int(value):,}".replace(",", " "), True, "thousands")
            add("gsm8k", ref, f"{int(value) + 1:,}", False, "wrong_thousands")
            split = _split_digits(str(int(value)))
            if split:
                add("gsm8k", ref, split, False, "wrong_split_digits")
        elif i % 4 == 0:
            add("gsm8k", ref, f"\\${ref}", True, "units")
            add("gsm8k", ref, f"{ref}\\text{{ dollars}}", True, "units")
        elif i % 4 == 1:
            add("gsm8k", ref, f"{ref}\\%", True, "percent")
            add("gsm8k", f"{ref}%", f"{ref}", True, "percent")
            add("gsm8k", f"{ref}\\%", f"{ref}%", True, "percent")
        elif i % 4 == 2:
            add("gsm8k", ref, f"x = {ref}", True, "equation")
        wrong = _num_str(value + rng.choice([1, 2, 5, 10]))
        add("gsm8k", ref, wrong, False, "wrong_number")
        if i % 4 == 1:
            add("gsm8k", f"{ref}%", f"{wrong}\\%", False, "wrong_percent")

    cases.extend(_handwritten_math())
    for i, case in enumerate(cases):
        case["id"] = f"math-{i:04d}"
    return cases


def _handwritten_math() -> list[dict]:
    """Minerva-style references (e-notation, units), percent, intervals, equations, multi-part answers, and the
    wrong answers that earlier shortcuts accepted."""
    rows = [
        # (reference, answer, label, kind)
        ("4.4e7", r"4.4 \times 10^{7}", True, "enotation"),
        ("4.4e7", r"4.4 \cdot 10^7", True, "enotation"),
        ("4.4e7", "44000000", True, "enotation"),
        ("4.4e7", r"4.4 \times 10^{6}", False, "wrong_enotation"),
        ("4.4e7", "4.4", False, "wrong_enotation"),
        ("1.2e-3", r"1.2 \times 10^{-3}", True, "enotation"),
        ("1.2e-3", "0.0012", True, "enotation"),
        ("1.2e-3", r"1.2 \times 10^{3}", False, "wrong_enotation"),
        ("6.02e23", r"6.02 \times 10^{23}", True, "enotation"),
        ("3e8", r"3 \times 10^8", True, "enotation"),
        ("3e8", "3e8", True, "enotation"),
        ("3e8", r"3 \times 10^9", False, "wrong_enotation"),
        (r"1.5 \times 10^{11}", "1.5e11", True, "enotation"),
        (r"1.5 \times 10^{11}", "1.5e12", False, "wrong_enotation"),
        ("62.5%", r"62.5\%", True, "percent"),
        (r"62.5\%", "62.5%", True, "percent"),
        (r"62.5\%", "62.5", True, "percent"),
        ("62.5%", "0.625", True, "percent"),
        ("62.5%", "63.5%", False, "wrong_percent"),
        ("62.5%", "6.25", False, "wrong_percent"),
        (r"12.5\%", r"12.5 \text{ percent}", True, "percent"),
        (r"40\%", "40", True, "percent"),
        (r"40\%", "0.4", True, "percent"),
        (r"40\%", "4", False, "wrong_percent"),
        ("23", "2 3", False, "wrong_split_digits"),
        ("1000", "10 00", False, "wrong_split_digits"),
        ("1000", "1,000", True, "thousands"),
        ("1000", r"1\,000", True, "thousands"),
        ("1000", "100", False, "wrong_number"),
        ("1,000", "1,00", False, "wrong_thousands"),
        ("12,345", "12345", True, "thousands"),
        ("12,345", "12,346", False, "wrong_thousands"),
        (r"\frac{1}{3} E_{1}+\frac{2}{3} E_{2}", r"\frac{2}{3}", False, "wrong_fragment"),
        (r"\frac{1}{3} E_{1}+\frac{2}{3} E_{2}", r"\frac{1}{3}", False, "wrong_fragment"),
        (r"\frac{1}{3} E_{1}+\frac{2}{3} E_{2}", r"\frac{1}{3} E_{1}+\frac{2}{3} E_{2}", True, "identity"),
        (r"\frac{1}{3} E_{1}+\frac{2}{3} E_{2}", r"\frac{1}{3}E_{1} + \frac{2}{3}E_{2}", True, "format"),
        ("x = 3", "3", True, "equation"),
        ("3", "x = 3", True, "equation"),
        ("3", "x = 4", False, "wrong_equation"),
        ("y = 2x + 1", "2x+1", True, "equation"),
        ("y = 2x + 1", "y = 2x - 1", False, "wrong_equation"),
        (r"90^\circ", "90", True, "degrees"),
        ("90", r"90^{\circ}", True, "degrees"),
        ("45", r"45°", True, "degrees"),
        (r"30^\circ", r"60^\circ", False, "wrong_degrees"),
        (r"10\text{ cm}", "10", True, "units"),
        ("10", r"10 \text{ cm}", True, "units"),
        ("10", r"10\mbox{ meters}", True, "units"),
        (r"5\text{ cm}", "6", False, "wrong_units"),
        (r"\$18.50", "18.5", True, "units"),
        (r"(-\infty, 2]", r"(-\infty,2]", True, "interval"),
        (r"(-\infty, 2]", r"(-\infty,2)", False, "wrong_interval_bracket"),
        (r"[1, 5)", r"[1,5)", True, "interval"),
        (r"[1, 5)", r"[1,5]", False, "wrong_interval_bracket"),
        (r"(-\infty, -1) \cup (1, \infty)", r"(-\infty,-1)\cup(1,\infty)", True, "interval"),
        (r"(-\infty, -1) \cup (1, \infty)", r"(1,\infty)", False, "wrong_dropped_part"),
        (r"(1, 2)", r"(2, 1)", False, "wrong_tuple_order"),
        (r"(3, -4)", r"\left(3,-4\right)", True, "tuple"),
        (r"\{1, 2, 3\}", r"\{3, 2, 1\}", True, "set_reordered"),
        (r"\{1, 2, 3\}", r"\{1, 2\}", False, "wrong_dropped_part"),
        ("1, 2", "2, 1", True, "set_reordered"),
        ("1, 2", "12", False, "wrong_number"),
        ("-2, 5", "5, -2", True, "set_reordered"),
        ("-2, 5", "-2", False, "wrong_dropped_part"),
        (r"x=2, y=3", r"x = 2, y = 3", True, "multipart"),
        (r"\frac{14}{3}", "14/3", True, "format"),
        (r"\frac{14}{3}", r"4\frac{2}{3}", True, "format"),
        (r"\frac{14}{3}", "14/5", False, "wrong_number"),
        (r"\sqrt{2}", r"2^{1/2}", True, "format"),
        (r"\sqrt{2}", r"\sqrt{3}", False, "wrong_number"),
        (r"\pi", r"3.14159265358979", True, "format"),
        (r"\text{Evelyn}", "Evelyn", True, "text"),
        (r"\text{Evelyn}", "Evelny", False, "wrong_text"),
        (r"\text{(C)}", "C", True, "text"),
        ("5", "", False, "wrong_empty"),
        (r"11,\! 111,\! 111,\! 100", "11111111100", True, "thousands"),
        (r"11,\! 111,\! 111,\! 100", "100, 111, 11", False, "wrong_thousands"),
        (r"10,\!080", "10, 80", False, "wrong_thousands"),
        ("1000", "1,0000", False, "wrong_thousands"),
        ("1000", "1.000", False, "wrong_thousands"),
        (r"\frac{\sqrt{2}}{2}", r"\frac{1}{\sqrt{2}}", True, "format"),
        (r"\frac{1}{3}", "0.333", False, "wrong_number"),
        (r"2\frac{1}{2}", "2.5", True, "format"),
        ("5", r"5 \text{ and } 6", False, "wrong_multipart"),
        (r"x \in [2, 5)", "[2,5)", True, "interval"),
        ("(1, 2)", "(1, 2, 3)", False, "wrong_tuple_order"),
        ("-1", "1", False, "wrong_sign"),
        (r"\frac{1}{2}", r"-\frac{1}{2}", False, "wrong_sign"),
        (r"\infty", r"-\infty", False, "wrong_sign"),
        ("2^{10}", "1024", True, "format"),
        (r"10\%", "0.1", True, "percent"),
        (r"10\%", "10", True, "percent"),
        ("0.1", r"10\%", True, "percent"),
        (r"10\%", "1", False, "wrong_percent"),
        (r"10\%", r"0.1\%", False, "wrong_percent"),
        ("x = 3", "x = -3", False, "wrong_equation"),
        ("x=2, y=3", "x=3, y=2", False, "wrong_multipart"),
        (r"\dfrac{5}{2}", r"\frac52", True, "format"),
        (r"2\sqrt{5}", r"\sqrt{20}", True, "format"),
        (r"\$5.00", "5", True, "units"),
        (r"5 \text{ cm}^2", "5", True, "units"),
        (r"5 \text{ cm}^2", "25", False, "wrong_units"),
        (r"3\pi", r"3 \pi", True, "format"),
        (r"3\pi", "9.42", False, "wrong_number"),
        ("12", "1 2", False, "wrong_split_digits"),
        ("12", "12 12", False, "wrong_split_digits"),
        ("2e3", "2000", True, "enotation"),
        ("2e3", "2e^3", False, "wrong_enotation"),
        ("2.5e-4", r"2.5\times10^{-4}", True, "enotation"),
        ("2.5e-4", r"2.5\times10^{4}", False, "wrong_enotation"),
        (r"\text{(B)}", r"\text{(D)}", False, "wrong_text"),
        ("7", r"\text{seven}", False, "wrong_text"),
        (r"120^\circ", r"\frac{2\pi}{3}", False, "wrong_degrees"),
        ("(0, 3)", r"\left(0, 3\right)", True, "tuple"),
        ("(0, 3)", "(0, 3), (3, 0)", False, "wrong_multipart"),
        ("2, 3", r"2 \text{ and } 3", True, "multipart"),
        (r"6 \text{ and } 8", "6, 8", True, "multipart"),
        ("2, 3", r"2 \text{ and } 4", False, "wrong_multipart"),
        ("2, 3", r"x=2 \text{ or } x=3", True, "multipart"),
        ("2, 3", "x = 2, x = 3", True, "multipart"),
        ("(2, 3)", "x=2, y=3", True, "multipart"),
        (r"\pm 2", "2, -2", True, "multipart"),
        ("2, -2", r"\pm 2", True, "multipart"),
        (r"\pm 2", "2", False, "wrong_multipart"),
        ("a=1, b=2", "b=2, a=1", True, "multipart"),
        ("1, 2, 3", "1, 2", False, "wrong_dropped_part"),
        (r"\frac{1}{2}, 3", "3, 0.5", True, "multipart"),
        ("[-2, 7]", r"-2 \le x \le 7", True, "interval"),
        (r"x \in (0, 1)", "0 < x < 1", True, "interval"),
        ("23", r"2\text{ }3", False, "wrong_split_digits"),
        (r"(3, \infty)", "x > 3", True, "interval"),
        (r"[3, \infty)", "x > 3", False, "wrong_interval_bracket"),
        (r"x \ge 3", r"[3, \infty)", True, "interval"),
        ("[-2, 7]", r"-2 < x \le 7", False, "wrong_interval_bracket"),
        (r"(-\infty, \frac{1}{2}]", r"x \leq \frac{1}{2}", True, "interval"),
    ]
    return [{"source": "handwritten", "reference": r, "response": _box(a, i), "answer": a, "label": lab, "kind": k}
            for i, (r, a, lab, k) in enumerate(rows)]


_THOUSANDS_IN_REF = re.compile(r"\d,(?:\\!\s*)?\d{3}(?!\d)")


def _math_variant(ref: str) -> str | None:
    """A rewriting of a MATH-500 reference that means the same: the kind of change a model makes."""
    s = ref
    if _THOUSANDS_IN_REF.search(s) and not re.search(r"[()\[\]]", s):
        return re.sub(r"(?<=\d),(?:\\!\s*)?(?=\d{3}(?!\d))", "", s)
    if "\\dfrac" in s:
        return s.replace("\\dfrac", "\\frac")
    if "\\frac" in s and "\\left" not in s:
        return s.replace("\\frac", "\\dfrac")
    if "\\left" in s:
        return s.replace("\\left", "").replace("\\right", "")
    if re.fullmatch(r"-?\d+", s):
        return f"{s}.0"
    if ", " in s:
        return s.replace(", ", ",")
    if "," in s:
        return s.replace(",", ", ")
    if " " in s:
        return s.replace(" ", "")
    return None


def _structure_kind(ref: str) -> str:
    s = ref.replace("\\left", "").replace("\\right", "").strip()
    if re.fullmatch(r"[\(\[].*,.*[\)\]]", s) and ("\\infty" in s or s[0] != s[-1] and s[0] + s[-1] not in ("()",)):
        return "interval"
    if s.startswith("(") and s.endswith(")") and "," in s:
        return "tuple"
    if "," in s and not _THOUSANDS_IN_REF.search(s) and not s.startswith(("\\{", "[")) and "\\begin" not in s:
        return "list"
    return "other"


def _split_top(s: str) -> list[str]:
    parts, depth, cur = [], 0, ""
    for ch in s:
        if ch in "([{":
            depth += 1
        elif ch in ")]}":
            depth -= 1
        if ch == "," and depth == 0:
            parts.append(cur)
            cur = ""
        else:
            cur += ch
    parts.append(cur)
    return [p.strip() for p in parts]


def _swap_tuple(ref: str) -> str | None:
    s = ref.replace("\\left", "").replace("\\right", "").strip()
    parts = _split_top(s[1:-1])
    if len(parts) < 2 or parts[0] == parts[1]:
        return None
    parts[0], parts[1] = parts[1], parts[0]
    return "(" + ", ".join(parts) + ")"


def _drop_part(ref: str) -> str | None:
    s = ref.replace("\\left", "").replace("\\right", "").strip()
    if s.startswith("(") and s.endswith(")"):
        parts = _split_top(s[1:-1])
        return "(" + ", ".join(parts[:-1]) + ")" if len(parts) > 2 else None
    parts = _split_top(s)
    if len(parts) < 2 or len(set(parts)) < len(parts):
        return None
    return ", ".join(parts[:-1])


def _reorder_list(ref: str) -> str | None:
    parts = _split_top(ref)
    if len(parts) < 2 or len(set(parts)) < 2:
        return None
    return ", ".join(reversed(parts))


def _flip_bracket(ref: str) -> str | None:
    s = ref.strip()
    if s.endswith("]"):
        return s[:-1] + ")"
    if s.endswith(")") and "\\infty" not in s[-8:]:
        return s[:-1] + "]"
    return None


def _split_digits(ref: str) -> str | None:
    """Digits split by a space where no thousands grouping puts one: '23' -> '2 3', '1000' -> '10 00'."""
    if not re.fullmatch(r"\d{2,}", ref):
        return None
    cut = len(ref) - 2 if len(ref) >= 4 else 1  # never a group of three on the right
    return ref[:cut] + " " + ref[cut:]


# ------------------------------------------------------------------------------------------------ output


def _keep_reference_verdicts(path: Path, cases: list[dict], fields: tuple[str, ...]) -> None:
    if not path.exists():
        return
    old = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        row = json.loads(line)
        old[row["id"]] = row
    for case in cases:
        prev = old.get(case["id"])
        same = prev is not None and all(prev.get(k) == case.get(k) for k in ("response", "reference", "kwargs",
                                                                             "instruction_id_list"))
        if same:
            for f in fields:
                if f in prev:
                    case[f] = prev[f]


def write_jsonl(path: Path, rows: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--benchmarks", default=str(REPO / "ringctl" / "eval" / "data" / "benchmarks"))
    ap.add_argument("--out", default=str(CORPUS_DIR))
    ap.add_argument("--random", type=int, default=300, help="random IFEval cases (the stored corpus has 300)")
    ap.add_argument("--seed", type=int, default=2024, help="seed of the random IFEval cases")
    args = ap.parse_args()
    out = Path(args.out)
    ifeval = ifeval_cases(args.random, args.seed)
    math = math_cases(Path(args.benchmarks))
    _keep_reference_verdicts(out / "ifeval.jsonl", ifeval, ("reference_strict", "reference_loose", "reference_error"))
    _keep_reference_verdicts(out / "math.jsonl", math, ("reference_correct", "reference_error"))
    write_jsonl(out / "ifeval.jsonl", ifeval)
    write_jsonl(out / "math.jsonl", math)
    print(f"{len(ifeval)} IFEval cases, {len(math)} math cases -> {out}")


if __name__ == "__main__":
    main()
