"""Answer extraction shared by the \\boxed{} domains."""

from ringctl.rewards.base import RewardResult, answer_region, boxed_contents, final_boxed


def test_boxed_contents_handles_nested_braces_and_fbox():
    text = r"a \boxed{\frac{1}{2}} then \fbox{x^{2}} and \boxed {3}"
    assert boxed_contents(text) == [r"\frac{1}{2}", "x^{2}", "3"]


def test_unclosed_box_is_ignored():
    assert boxed_contents(r"\boxed{12") == []
    assert boxed_contents(r"\boxed{1} \boxed{2") == ["1"]


def test_answer_comes_after_the_last_think_block():
    resp = "<think>\ntry \\boxed{5}\n</think>\nthe answer is \\boxed{7}"
    assert answer_region(resp) == "\nthe answer is \\boxed{7}"
    assert final_boxed(resp) == ("7", "ok")


def test_unterminated_think_has_no_answer():
    assert final_boxed("<think>\n1+1=2 \\boxed{2}")[0] is None


def test_hedging_between_different_answers_gives_none():
    answer, why = final_boxed(r"\boxed{3} or maybe \boxed{4}")
    assert answer is None and "hedging" in why
    assert final_boxed(r"\boxed{3} so \boxed{ 3 }")[0] == "3"  # the same answer twice is fine


def test_reward_result_is_clamped():
    assert RewardResult(1.5, "x").score == 1.0 and RewardResult(-2, "x").score == 0.0
