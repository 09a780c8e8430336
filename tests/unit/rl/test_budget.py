import pytest
import torch

from ringctl.rl.advantages import group_advantages
from ringctl.rl.budget import ScoredResponse, plan_c3po_ranks, plan_grpo_ranks, select_responses_within_budget


def test_boundary_response_is_truncated_to_exactly_phi():
    # cumulative 3, 8, 12 > 10: response 2 is the boundary (3 + 5 < 10 <= 3 + 5 + 4), 2 of its 4 tokens enter
    sel = select_responses_within_budget([3, 5, 4, 6], token_budget=10)
    assert sel.tokens_used == [3, 5, 2, 0]
    assert sel.selected == [0, 1, 2] and sel.leftover == [3]
    assert sel.total_tokens == 10 and sel.budget_reached
    assert sel.truncated == [2]


def test_budget_landing_on_a_response_end_truncates_nothing():
    # 4 + 6 = 10 = phi exactly: N = 1 satisfies 4 < 10 <= 10, response 2 is leftover
    sel = select_responses_within_budget([4, 6, 3], token_budget=10)
    assert sel.tokens_used == [4, 6, 0] and sel.leftover == [2] and sel.truncated == []


def test_short_batch_takes_everything_and_reports_it():
    sel = select_responses_within_budget([2, 3], token_budget=10)
    assert sel.tokens_used == [2, 3] and sel.total_tokens == 5 and not sel.budget_reached


def _scored(rewards, lengths, k):
    adv = group_advantages(torch.tensor(rewards, dtype=torch.float32).view(-1, k)).advantages.flatten()
    return [ScoredResponse(prompt_index=i // k, prompt_ids=[1, 2], response_ids=list(range(n)),
                           old_logprobs=torch.full((n,), -float(i + 1)), advantage=float(adv[i]),
                           reward=float(rewards[i])) for i, n in enumerate(lengths)]


def test_advantages_are_computed_before_the_cut():
    # prompt 1's group is [1, 0, 0, 0] -> A = sqrt(3), -1/sqrt(3), ...; the cut keeps only its first two
    # responses, whose own mean/std ([1, 0]) would give +1 / -1 instead.
    rewards = [1, 0, 1, 0, 1, 0, 0, 0]
    responses = _scored(rewards, [2, 2, 2, 2, 3, 3, 3, 3], k=4)
    step = plan_c3po_ranks(responses, [], 14)  # 8 tokens of prompt 0, then 3 + 3 of prompt 1
    assert [r.prompt_index for r in step.responses] == [0, 0, 0, 0, 1, 1]
    assert step.total_tokens == 14
    assert step.responses[4].advantage == pytest.approx(3 ** 0.5, rel=1e-5)
    assert step.responses[5].advantage == pytest.approx(-(3 ** -0.5), rel=1e-5)


def test_leftover_discard_vs_defer():
    responses = _scored([1, 0, 1, 0], [4, 4, 4, 4], k=2)
    discard = plan_c3po_ranks(responses, [], 6, leftover="discard")
    assert discard.tokens_used == [4, 2] and discard.discarded == 2 and discard.deferred == []

    responses = _scored([1, 0, 1, 0], [4, 4, 4, 4], k=2)
    defer = plan_c3po_ranks(responses, [], 6, leftover="defer")
    assert defer.discarded == 0 and [r.deferred_steps for r in defer.deferred] == [1, 1]
    kept_adv = [r.advantage for r in defer.deferred]
    kept_logp = [r.old_logprobs.clone() for r in defer.deferred]
    # the next step's batch starts with the deferred responses, unchanged advantages and old log-probs
    fresh = _scored([0, 0], [5, 5], k=2)
    nxt = plan_c3po_ranks(fresh, defer.deferred, 10, leftover="defer")
    assert nxt.responses[:2] == defer.deferred and nxt.tokens_used == [4, 4, 2]
    assert [r.advantage for r in nxt.responses[:2]] == kept_adv
    assert all(torch.equal(a.old_logprobs, b) for a, b in zip(nxt.responses[:2], kept_logp, strict=True))
    assert [r.prompt_index for r in nxt.deferred] == [0]  # the second fresh response waits again


def test_grpo_plan_takes_every_response_whole_in_the_global_order():
    responses = _scored([1, 0, 1, 0, 0, 1], [3, 5, 4, 6, 2, 2], k=2)
    plan = plan_grpo_ranks(responses)
    assert plan.responses == responses and plan.tokens_used == [3, 5, 4, 6, 2, 2] and plan.total_tokens == 22
    assert plan.positions == list(range(6)) and plan.deferred == [] and plan.discarded == 0
    # rank 1 of two, rank 0 holding 4 responses: its positions follow rank 0's
    two = plan_grpo_ranks(responses[4:], rank=1, gather=lambda n: [4, n])
    assert two.positions == [4, 5] and two.tokens_used == [2, 2]
