"""Synthetic task suite: schema, determinism, tiny-model sizing, and every solution verified by its domain."""

import re

import pytest

from ringctl.data.records import FIELDS
from ringctl.data.synth import DOMAINS, generate_rl, generate_sft
from ringctl.rewards import score, verify_reference

TINY_CHARS = re.compile(r"^[a-z0-9+\-*=()\\{}<>/ ?\n]*$")


@pytest.mark.parametrize("seed", [0, 1, 7])
@pytest.mark.parametrize("difficulty", [1, 2, 3])
def test_every_record_scores_one_with_its_own_solution(seed, difficulty):
    for records in (generate_sft(15, seed, DOMAINS, difficulty), generate_rl(15, seed, DOMAINS, difficulty)):
        assert {r["domain"] for r in records} == set(DOMAINS)
        for r in records:
            assert tuple(r) == FIELDS and r["source"] == "synthetic"
            assert score(r["domain"], r["solution"], r["answer"], **r["metadata"]) == 1.0, r
            assert verify_reference(r["domain"], r["answer"], **r["metadata"])[0], r
            wrong = r["solution"].replace("\\boxed{", "\\boxed{9")
            assert score(r["domain"], wrong, r["answer"]) == 0.0, r


def test_default_is_short_easy_and_tiny_charset():
    records = generate_sft(200, 0) + generate_rl(200, 0)
    assert DOMAINS[:2] == ["arithmetic", "countdown"]
    assert {r["domain"] for r in records} == {"arithmetic", "countdown"}
    for r in records:
        assert len(r["prompt"]) <= 80 and 40 <= len(r["solution"]) <= 200, r
        assert TINY_CHARS.match(r["prompt"]) and TINY_CHARS.match(r["solution"]), r
        assert r["solution"].startswith("<think>\n") and "\n</think>\nthe answer is \\boxed{" in r["solution"]


def test_difficulty_one_prompts_are_short_for_all_domains():
    for r in generate_rl(50, 3, DOMAINS):
        assert len(r["prompt"]) <= 80 and len(r["solution"]) <= 200, r
        assert TINY_CHARS.match(r["prompt"]) and TINY_CHARS.match(r["solution"]), r


def test_seeded_and_splits_differ():
    assert generate_sft(20, 5) == generate_sft(20, 5)
    assert generate_sft(20, 5) != generate_sft(20, 6)
    assert [r["prompt"] for r in generate_sft(20, 5)] != [r["prompt"] for r in generate_rl(20, 5)]
    assert len({r["id"] for r in generate_sft(50, 5) + generate_rl(50, 5)}) == 100


def test_bad_arguments():
    with pytest.raises(ValueError, match="unknown synthetic domain"):
        generate_sft(1, 0, ["chess"])
    with pytest.raises(ValueError):
        generate_rl(1, 0, difficulty=0)


def test_preference_pairs_are_verified():
    from ringctl.data.synth import generate_preferences

    pairs = generate_preferences(30, 2, DOMAINS)
    assert len(pairs) >= 25
    for p in pairs:
        assert score(p["domain"], p["chosen"], p["answer"]) == 1.0
        assert score(p["domain"], p["rejected"], p["answer"]) == 0.0
        assert p["chosen"] != p["rejected"] and p["prompt"]


def test_generate_ifeval_solutions_satisfy_every_instruction():
    from ringctl.data.synth import generate_ifeval
    from ringctl.rewards import score, score_detailed

    records = generate_ifeval(12, seed=5)
    assert records == generate_ifeval(12, seed=5)  # deterministic by seed
    for r in records:
        assert r["domain"] == "ifeval" and len(r["answer"]["instruction_id_list"]) == 5
        assert score("ifeval", r["solution"], r["answer"]) == 1.0
        broken = score_detailed("ifeval", r["solution"] + " also, this", r["answer"])
        assert broken.score == 0.0 and broken.meta["instructions"]["punctuation:no_comma"] is False


def test_guess_fraction_mixes_hasty_guesses_into_sft_only():
    from ringctl.rewards import score

    records = generate_sft(400, 3, ["arithmetic"], guess_fraction=0.5)
    guesses = [r for r in records if r["metadata"]["style"] == "guess"]
    assert 150 < len(guesses) < 250
    assert all(r["solution"].startswith("<think>\n</think>\nthe answer is \\boxed{") for r in guesses)
    right = sum(score("arithmetic", r["solution"], r["answer"]) for r in guesses) / len(guesses)
    assert 0.1 < right < 0.4  # a guess is right about 1 time in 4
    reasoning = [r for r in records if r["metadata"]["style"] == "reasoning"]
    assert all(score("arithmetic", r["solution"], r["answer"]) == 1.0 for r in reasoning)
    # the prompts and references are those of the plain draw: only the solutions change
    plain = generate_sft(400, 3, ["arithmetic"])
    assert [(r["prompt"], r["answer"]) for r in records] == [(r["prompt"], r["answer"]) for r in plain]
    with pytest.raises(ValueError):
        generate_sft(1, 0, guess_fraction=1.5)


def test_slip_fraction_keeps_the_reasoning_and_makes_its_last_result_wrong():
    """An imperfect teacher: that share of the traces reasons as usual and slips at the end; the slip is the same
    wrong value in the trace and in the boxed answer, and the prompts and references are unchanged."""
    from ringctl.rewards import score

    plain = generate_sft(400, 3, ["arithmetic"])
    records = generate_sft(400, 3, ["arithmetic"], slip_fraction=0.3)
    assert [(r["prompt"], r["answer"]) for r in records] == [(r["prompt"], r["answer"]) for r in plain]
    slips = [(r, p) for r, p in zip(records, plain) if r["metadata"]["style"] == "slip"]
    assert 80 < len(slips) < 160
    for r, p in slips:
        assert score("arithmetic", r["solution"], r["answer"]) == 0.0
        think, boxed = r["solution"].split("</think>")
        wrong = boxed.split("\\boxed{")[1].split("}")[0]
        assert wrong != r["metadata"]["final"] and think.rstrip().endswith("=" + wrong)
        # the same trace up to its last result: the reasoning is kept
        assert think.rstrip()[: -len(wrong)] == p["solution"].split("</think>")[0].rstrip()[: -len(p["metadata"]["final"])]
    kept = [r for r in records if r["metadata"]["style"] == "reasoning"]
    assert all(score("arithmetic", r["solution"], r["answer"]) == 1.0 for r in kept)
    assert len(kept) + len(slips) == len(records)
    with pytest.raises(ValueError, match="slip_fraction"):
        generate_sft(1, 0, slip_fraction=-0.1)
