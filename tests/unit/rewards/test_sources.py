"""Reward routing and aggregation (ringctl/rewards/sources.py): which source scores which domain, the two
aggregations, and the per-source metrics summed over ranks."""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest

from ringctl.rewards.sources import (
    RewardMixer,
    RewardModelSource,
    VerifierSource,
    normalise_in_groups,
    routing,
    source_metrics,
    source_sums,
    uncovered_problem,
)
from ringctl.train.models import build_char_tokenizer


class LengthScorer:
    """A deterministic scorer for routing tests: the response's length in characters / 10."""

    def __init__(self):
        self.calls = []

    def score(self, prompts, responses):
        self.calls.append(list(responses))
        return [len(r) / 10 for r in responses]


def _rollouts(tok, texts_per_prompt):
    out = []
    for i, texts in enumerate(texts_per_prompt):
        out += [SimpleNamespace(prompt_index=i, response_ids=tok.encode(t, add_special_tokens=False),
                                length=len(t)) for t in texts]
    return out


def test_default_routing_verifier_for_verifiable_domains_reward_model_for_the_rest():
    sources = [VerifierSource(), RewardModelSource(model="rm.model")]
    table = routing(sources, ["arithmetic", "ifeval", "chat"], lambda d: d in ("arithmetic", "ifeval"))
    assert table == {"arithmetic": [0], "ifeval": [0], "chat": [1]}
    both = [VerifierSource(), RewardModelSource(model="rm.model", domains=["chat", "ifeval"])]
    assert routing(both, ["ifeval", "chat"], lambda d: d == "ifeval") == {"ifeval": [0, 1], "chat": [1]}


def test_uncovered_domain_is_named():
    problem = uncovered_problem([VerifierSource()], ["arithmetic", "chat"])
    assert problem is not None and "['chat']" in problem and "reward_model" in problem
    assert uncovered_problem([VerifierSource(), RewardModelSource(model="rm.model")], ["arithmetic", "chat"]) is None


def test_router_scores_each_domain_with_its_sources_and_sums_the_weights():
    tok = build_char_tokenizer()
    records = [{"prompt": "1+1", "domain": "arithmetic", "answer": "2"},
               {"prompt": "tell me", "domain": "chat", "answer": "x"}]
    rollouts = _rollouts(tok, [["\\boxed{2}", "\\boxed{3}"], ["ab", "abcd"]])
    rm = LengthScorer()
    router = RewardMixer([VerifierSource(weight=2.0), RewardModelSource(model="rm.model", weight=0.5)],
                          reward_models={"reward_model": rm}, reward_workers=1)
    batch = router.score(tok, records, rollouts, 2)
    assert batch.per_source["verifier"] == [1.0, 0.0, None, None]
    assert batch.per_source["reward_model"] == [None, None, pytest.approx(0.2), pytest.approx(0.4)]
    assert rm.calls == [["ab", "abcd"]]  # the RM saw only the chat responses, decoded
    assert batch.logged == pytest.approx([2.0, 0.0, 0.1, 0.2])
    assert batch.for_advantage == batch.logged


def test_normalize_then_sum_normalises_each_source_within_its_group():
    tok = build_char_tokenizer()
    records = [{"prompt": "1+1", "domain": "arithmetic", "answer": "2"}]
    rollouts = _rollouts(tok, [["\\boxed{2}", "\\boxed{3}", "\\boxed{2} ok"]])
    rm = LengthScorer()
    router = RewardMixer([VerifierSource(), RewardModelSource(model="rm.model", domains=["arithmetic"], weight=0.5)],
                          aggregation="normalize_then_sum", reward_models={"reward_model": rm}, reward_workers=1)
    batch = router.score(tok, records, rollouts, 3)
    v = normalise_in_groups([1.0, 0.0, 1.0], 3)
    r = normalise_in_groups([len(t) / 10 for t in ["\\boxed{2}", "\\boxed{3}", "\\boxed{2} ok"]], 3)
    assert batch.for_advantage == pytest.approx([a + 0.5 * b for a, b in zip(v, r)])
    # the logged reward stays the weighted raw sum
    assert batch.logged == pytest.approx([1.0 + 0.5 * 0.9, 0.0 + 0.5 * 0.9, 1.0 + 0.5 * 1.2])


def test_normalise_in_groups_constant_group_gives_zero():
    assert normalise_in_groups([0.5, 0.5, 1.0, 0.0], 2) == pytest.approx([0.0, 0.0, 1.0, -1.0], abs=1e-5)
    assert normalise_in_groups([None, None], 2) == [None, None]


def test_uncovered_domain_at_scoring_time_is_an_error():
    tok = build_char_tokenizer()
    router = RewardMixer([VerifierSource()], reward_workers=1)
    with pytest.raises(ValueError, match="chat"):
        router.score(tok, [{"prompt": "p", "domain": "chat", "answer": None}], _rollouts(tok, [["hi"]]), 1)


def test_source_metrics_from_sums_over_ranks_equal_the_single_process_ones():
    tok = build_char_tokenizer()
    records = [{"prompt": "a", "domain": "chat", "answer": None}, {"prompt": "b", "domain": "chat", "answer": None}]
    rollouts = _rollouts(tok, [["x", "xyz"], ["xy", "wxyz0"]])
    router = RewardMixer([RewardModelSource(model="rm.model")], reward_models={"reward_model": LengthScorer()})
    whole = router.score(tok, records, rollouts, 2)
    lengths = [r.length for r in rollouts]
    single = source_metrics(source_sums(whole, lengths), router.sources)
    halves = [source_sums(router.score(tok, records, rollouts[i:i + 2], 2), lengths[i:i + 2]) for i in (0, 2)]
    summed = {k: halves[0][k] + halves[1][k] for k in halves[0]}
    assert source_metrics(summed, router.sources) == pytest.approx(single)
    assert single["reward/reward_model/mean"] == pytest.approx(sum(lengths) / 4 / 10)
    assert math.isclose(single["reward/reward_model/length_corr"], 1.0, rel_tol=1e-6)  # score = length / 10
