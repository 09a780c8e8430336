"""The estimators against values computed by hand."""

from __future__ import annotations

import math
from itertools import combinations

import pytest

from ringctl.eval.metrics import default_ks, ifeval_levels, majority_correct, pass_at_k, summarise
from ringctl.stats import mean_and_stderr


@pytest.mark.parametrize("n,c,k,expected", [
    (4, 0, 1, 0.0),
    (4, 4, 1, 1.0),
    (4, 1, 1, 0.25),            # c/n
    (4, 1, 2, 0.5),             # 1 - C(3,2)/C(4,2) = 1 - 3/6
    (4, 2, 2, 5 / 6),           # 1 - C(2,2)/C(4,2) = 1 - 1/6
    (4, 1, 4, 1.0),             # any draw of all 4 contains the correct one
    (5, 2, 3, 0.9),             # 1 - C(3,3)/C(5,3) = 1 - 1/10
    (10, 3, 4, 1 - 35 / 210),   # C(7,4) = 35, C(10,4) = 210
    (32, 1, 8, 0.25),           # one correct among 32: pass@8 = 8/32
    (16, 0, 16, 0.0),
    (3, 2, 2, 1.0),             # n - c < k
])
def test_pass_at_k_by_hand(n, c, k, expected):
    assert pass_at_k(n, c, k) == pytest.approx(expected, abs=1e-12)


def test_pass_at_k_is_the_probability_that_a_random_k_subset_holds_a_correct_sample():
    for n in range(1, 8):
        for c in range(n + 1):
            samples = [1] * c + [0] * (n - c)
            for k in range(1, n + 1):
                subsets = list(combinations(range(n), k))
                direct = sum(any(samples[i] for i in s) for s in subsets) / len(subsets)
                assert pass_at_k(n, c, k) == pytest.approx(direct, abs=1e-12)
                assert pass_at_k(n, c, k) == pytest.approx(1 - math.comb(n - c, k) / math.comb(n, k), abs=1e-12)


@pytest.mark.parametrize("n,c,k", [(4, 5, 1), (4, -1, 1), (4, 1, 5), (4, 1, 0)])
def test_pass_at_k_rejects_impossible_counts(n, c, k):
    with pytest.raises(ValueError):
        pass_at_k(n, c, k)


def test_default_ks_are_powers_of_two_up_to_n():
    assert default_ks(1) == [1]
    assert default_ks(4) == [1, 2, 4]
    assert default_ks(6) == [1, 2, 4]
    assert default_ks(32) == [1, 2, 4, 8, 16, 32]


def test_summarise_by_hand():
    # three problems, n = 4: 1/4, 4/4 and 0/4 correct
    per_problem = {"a": [1, 0, 0, 0], "b": [1, 1, 1, 1], "c": [0, 0, 0, 0]}
    out = summarise(per_problem, 4, [1, 2, 4])
    assert out["num_problems"] == 3
    assert out["pass@1"] == pytest.approx((0.25 + 1 + 0) / 3)
    # pass@2: a 1 - C(3,2)/C(4,2) = 0.5, b 1, c 0
    assert out["pass@k"] == {"1": pytest.approx(1.25 / 3), "2": pytest.approx(1.5 / 3), "4": pytest.approx(2 / 3)}
    means = [0.25, 1.0, 0.0]
    mean = sum(means) / 3
    sd = math.sqrt(sum((m - mean) ** 2 for m in means) / 2)
    assert out["stderr"] == pytest.approx(sd / math.sqrt(3))


def test_summarise_refuses_a_problem_with_the_wrong_number_of_samples():
    with pytest.raises(ValueError, match="expected 4"):
        summarise({"a": [1, 0, 0, 0], "b": [1, 0]}, 4, [1])


def test_mean_and_stderr():
    assert mean_and_stderr([1.0]) == (1.0, 0.0)
    mean, se = mean_and_stderr([0.0, 1.0])
    assert mean == 0.5 and se == pytest.approx(math.sqrt(0.5 / 2))


def test_majority_vote():
    # "5" twice (wrong), "4" once (right): the majority is wrong
    assert majority_correct(["5", "4", "5", None], [0, 1, 0, 0]) == 0.0
    assert majority_correct(["4", "4", "5", None], [1, 1, 0, 0]) == 1.0
    # a tie goes to the answer seen first
    assert majority_correct(["4", "5", "5", "4"], [1, 0, 0, 1]) == 1.0
    # samples without an answer do not vote; none at all scores 0
    assert majority_correct([None, None, "7"], [0, 0, 1]) == 1.0
    assert majority_correct([None, None], [0, 0]) == 0.0


def test_ifeval_levels():
    followed = [{"a": True, "b": False}, {"a": True, "b": True}, {"c": False}]
    all_followed = [0.0, 1.0, 0.0]
    prompt, inst = ifeval_levels(followed, all_followed)
    assert prompt == pytest.approx(1 / 3)
    assert inst == pytest.approx(3 / 5)
