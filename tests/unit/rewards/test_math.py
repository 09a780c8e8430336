"""Math verifier on real benchmark answers (MATH-500, GSM8K): self-agreement, rewritings, wrong answers."""

import json

import pytest

from ringctl.rewards import score, score_detailed, verify_reference
from ringctl.rewards.math_answer import math_verify_equal


def _math500(benchmarks):
    return [json.loads(line) for line in open(benchmarks / "math500.jsonl", encoding="utf-8")]


def test_every_math500_reference_matches_itself(benchmarks):
    rows = _math500(benchmarks)
    assert len(rows) == 500
    for row in rows:
        ans = row["answer"]
        assert score("math", f"<think>\nwork\n</think>\nthe answer is \\boxed{{{ans}}}", ans) == 1.0, ans
        assert verify_reference("math", ans)[0], ans
        assert math_verify_equal(ans, ans), ans  # Math-Verify itself, without the string shortcut


def test_gsm8k_final_answers(benchmarks):
    rows = [json.loads(line) for line in open(benchmarks / "gsm8k.jsonl", encoding="utf-8")][:300]
    for row in rows:
        final = row["answer"].split("####")[-1].strip()
        assert score("gsm8k", f"so \\boxed{{{final}}}", row["answer"]) == 1.0, final  # reference with '####'
        wrong = str(int(float(final.replace(",", ""))) + 1)
        assert score("math", f"\\boxed{{{wrong}}}", final) == 0.0, final


@pytest.mark.parametrize(("reference", "answer"), [
    (r"\frac{14}{3}", "14/3"),
    (r"\left( 3, \frac{\pi}{2} \right)", r"(3, \pi/2)"),
    (r"90^\circ", "90"),
    (r"\text{Evelyn}", "Evelyn"),
    (r"\dfrac{1}{2}", "0.5"),
    ("1,000", "1000"),
    (r"x^2+1", "1+x^2"),
])
def test_equivalent_rewritings_score_one(reference, answer):
    assert score("math", f"the answer is \\boxed{{{answer}}}", reference) == 1.0


@pytest.mark.parametrize(("reference", "answer"), [
    (r"\frac{14}{3}", "14/5"),
    (r"\left( 3, \frac{\pi}{2} \right)", r"(3, \pi)"),
    (r"90^\circ", "45"),
    (r"\text{Evelyn}", "Evelny"),  # an anagram: Math-Verify alone would read both as products of symbols
    ("10", "11"),
])
def test_wrong_answers_score_zero(reference, answer):
    assert score("math", f"\\boxed{{{answer}}}", reference) == 0.0


def test_missing_box_and_hedging_score_zero():
    assert score_detailed("math", "the answer is 5", "5").reason == "no \\boxed{} answer"
    res = score_detailed("math", r"\boxed{5} or \boxed{6}", "5")
    assert res.score == 0.0 and "hedging" in res.reason
    assert score("math", r"\boxed{\frac{1}{2}} i.e. \boxed{0.5}", "1/2") == 1.0  # equal answers are not hedging


def test_reference_from_real_math500_problem_with_a_wrong_answer(benchmarks):
    row = next(r for r in _math500(benchmarks) if r["answer"] == r"\left( 3, \frac{\pi}{2} \right)")
    assert score("math", r"\boxed{(3, \frac{\pi}{2})}", row["answer"]) == 1.0
    assert score("math", r"\boxed{(0, 3)}", row["answer"]) == 0.0
