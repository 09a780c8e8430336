"""The C3PO fill over ranks (budget_scope global): every rank's share of the plan, put together, is the plan one
process makes over the same rollouts (selection, truncation, order, deferral, the staleness cap); and the
token-budgeted micro-batch packing."""

from __future__ import annotations

import random
import threading

import pytest
import torch

from ringctl.dist import shard_bounds
from ringctl.rl.budget import ScoredResponse, plan_c3po_ranks
from ringctl.rl.microbatch import pack_micro_batches


def _responses(lengths: list[int], k: int, advantages: list[float]) -> list[ScoredResponse]:
    return [ScoredResponse(prompt_index=i // k, prompt_ids=[1, 2], response_ids=[7] * n,
                           old_logprobs=torch.zeros(n), advantage=a, reward=0.0)
            for i, (n, a) in enumerate(zip(lengths, advantages, strict=True))]


def _plan_on_ranks(world: int, fresh_blocks, carried_blocks, budget, **kw):
    """Run plan_c3po_ranks on `world` threads with a real all-gather (a barrier), like torch.distributed would."""
    slots: list = [None] * world
    barrier = threading.Barrier(world)
    results: list = [None] * world

    def gather_for(rank):
        def gather(obj):
            slots[rank] = obj
            barrier.wait()
            out = list(slots)
            barrier.wait()
            return out
        return gather

    def run(rank):
        results[rank] = plan_c3po_ranks(fresh_blocks[rank], carried_blocks[rank], budget, rank=rank,
                                        gather=gather_for(rank), **kw)

    threads = [threading.Thread(target=run, args=(r,)) for r in range(world)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return results


@pytest.mark.parametrize("informative_first", [False, True])
@pytest.mark.parametrize("world", [2, 3])
def test_global_fill_over_ranks_equals_one_process(world, informative_first):
    rng = random.Random(world)
    k, prompts = 4, 6
    lengths = [rng.randint(1, 30) for _ in range(k * prompts)]
    advantages = [0.0 if (i // k) % 3 == 0 else rng.uniform(-1, 1) for i in range(k * prompts)]
    budget = sum(lengths) // 2
    kw = dict(leftover="defer", informative_first=informative_first, max_defer_steps=1)

    single = plan_c3po_ranks(_responses(lengths, k, advantages), [], budget, **kw)
    everything = _responses(lengths, k, advantages)
    blocks = []
    for rank in range(world):
        lo, hi = shard_bounds(prompts, rank, world)
        blocks.append(everything[lo * k:hi * k])
    plans = _plan_on_ranks(world, blocks, [[] for _ in range(world)], budget, **kw)

    merged = sorted(((pos, r.prompt_index, r.length, used) for p in plans
                     for pos, r, used in zip(p.positions, p.responses, p.tokens_used, strict=True)))
    assert [m[1:] for m in merged] == [(r.prompt_index, r.length, used)
                                       for r, used in zip(single.responses, single.tokens_used, strict=True)]
    assert [m[0] for m in merged] == list(range(len(single.responses)))
    assert sum(sum(p.tokens_used) for p in plans) == budget == sum(single.tokens_used)
    assert all(p.total_tokens == budget for p in plans)
    # the leftovers are deferred on the rank that holds them, keyed by their place in the global order
    deferred = sorted((r.carry_key, r.prompt_index, r.length) for p in plans for r in p.deferred)
    assert deferred == [(r.carry_key, r.prompt_index, r.length) for r in single.deferred]

    # next step: the carried-over responses come first, in the same global order, and the cap drops those
    # cut a second time
    fresh2 = _responses(lengths, k, advantages)
    single2 = plan_c3po_ranks(fresh2, single.deferred, budget // 4, **kw)
    blocks2 = []
    for rank in range(world):
        lo, hi = shard_bounds(prompts, rank, world)
        blocks2.append(_responses(lengths, k, advantages)[lo * k:hi * k])
    plans2 = _plan_on_ranks(world, blocks2, [p.deferred for p in plans], budget // 4, **kw)
    merged2 = sorted((pos, r.prompt_index, r.length, used, r.deferred_steps) for p in plans2
                     for pos, r, used in zip(p.positions, p.responses, p.tokens_used, strict=True))
    assert [m[1:] for m in merged2] == [(r.prompt_index, r.length, used, r.deferred_steps)
                                        for r, used in zip(single2.responses, single2.tokens_used, strict=True)]
    assert merged2[0][4] == 1  # a carried-over response leads the step
    assert sum(p.stale_dropped for p in plans2) == single2.stale_dropped > 0


def test_per_rank_plan_alone_matches_the_single_process_fill():
    lengths, k = [5, 9, 3, 7, 2, 8, 6, 4], 4
    plan = plan_c3po_ranks(_responses(lengths, k, [1.0] * 8), [], 20, leftover="discard")
    assert plan.tokens_used == [5, 9, 3, 3] and plan.positions == [0, 1, 2, 3]
    assert plan.discarded == 4 and plan.deferred == [] and plan.total_tokens == 20


def test_staleness_cap():
    first = plan_c3po_ranks(_responses([10, 10, 10, 10], 2, [1, -1, 1, -1]), [], 10, leftover="defer",
                            max_defer_steps=2)
    assert [r.deferred_steps for r in first.deferred] == [1, 1, 1]
    second = plan_c3po_ranks([], first.deferred, 10, leftover="defer", max_defer_steps=2)
    assert [r.deferred_steps for r in second.deferred] == [2, 2] and second.stale_dropped == 0
    third = plan_c3po_ranks([], second.deferred, 10, leftover="defer", max_defer_steps=2)
    assert third.deferred == [] and third.stale_dropped == 1 and third.tokens_used == [10]


def test_micro_batches_bound_padded_tokens_and_keep_order():
    prompts, responses = [4, 6, 5, 4, 9, 3], [10, 2, 30, 8, 1, 5]
    batches = pack_micro_batches(prompts, responses, 40)
    assert [i for b in batches for i in b] == list(range(6))
    for b in batches:
        size = len(b) * (max(prompts[i] for i in b) + max(responses[i] for i in b))
        assert size <= 40 or len(b) == 1
    assert pack_micro_batches(prompts, responses, None) == [list(range(6))]
    assert pack_micro_batches([], [], 10) == []
    assert pack_micro_batches([50], [50], 10) == [[0]]  # larger than the limit on its own: alone
