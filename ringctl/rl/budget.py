"""Which rollout tokens enter the loss this step: the C3PO token budget and the GRPO sample-level batch.

C3PO (Ring-lite §3.2, Eq. 2): with a token budget Φ, take responses greedily in rollout order (prompt by prompt,
responses in the order they were sampled) until the cumulative count reaches Φ:

    Σ_{j<N} |y_j| < Φ ≤ Σ_{j≤N} |y_j|

Response N (the boundary response) is truncated so that exactly Φ tokens enter the loss; responses after N are
"leftover": discarded (the paper) or deferred to the front of the next step's batch (`leftover: defer`, the
C3PO++ spirit), keeping the advantages and old log-probs they were scored with.

Budget scope: `per_rank` gives every rank its own Φ, filled from its own rollouts (the paper's Φ = 409,600 reads
as per device); `global` runs the greedy fill once over all ranks' rollouts in the global order (ranks exchange
lengths and flags only, `plan_c3po_ranks`), each rank trains the selected responses it holds, so that exactly Φ
tokens enter the loss over all ranks and the summed update is the single-process one.

GRPO (the baseline, `plan_grpo_ranks`): every response of the step, untruncated; the loss normalises each response
by 1/|y_i| (ringctl/rl/loss.py, normalisation="per_response"), so the token count varies from step to step, which is
what C3PO fixes.

Only index arithmetic lives here (pure Python); ringctl/rl/trainer.py turns a plan into micro-batches.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import torch

LeftoverPolicy = Literal["discard", "defer"]
BudgetScope = Literal["per_rank", "global"]


@dataclass(frozen=True)
class BudgetSelection:
    """Outcome of a selection over responses 0..n-1 (indices into the list that was passed in).

    tokens_used[i]: how many leading tokens of response i enter the loss (0 when not selected).
    selected: indices that enter the loss, in order (the last one may be truncated).
    leftover: indices after the cut (not used this step).
    """

    tokens_used: list[int]
    selected: list[int]
    leftover: list[int]
    token_budget: int | None  # None for the GRPO sample-level batch (no budget)
    lengths: list[int]  # full response lengths, as passed in

    @property
    def total_tokens(self) -> int:
        return sum(self.tokens_used)

    @property
    def truncated(self) -> list[int]:
        """Selected responses that lost tokens to the cut (at most one under C3PO)."""
        return [i for i in self.selected if self.tokens_used[i] < self.lengths[i]]

    @property
    def budget_reached(self) -> bool:
        return self.token_budget is not None and self.total_tokens == self.token_budget


def select_responses_within_budget(lengths: Sequence[int], token_budget: int) -> BudgetSelection:
    """Greedy C3PO fill: whole responses while they fit, the boundary one truncated to land exactly on Φ.

    If all responses together hold fewer than Φ tokens, all are taken and `total_tokens < token_budget`
    (`budget_reached` is False): the caller decides whether to sample more rollouts or accept a short step.
    """
    if token_budget <= 0:
        raise ValueError(f"token_budget must be positive, got {token_budget}")
    tokens_used = [0] * len(lengths)
    selected: list[int] = []
    leftover: list[int] = []
    cumulative = 0
    for i, length in enumerate(lengths):
        if length < 0:
            raise ValueError(f"response {i} has negative length {length}")
        if cumulative >= token_budget:
            leftover.append(i)
            continue
        take = min(length, token_budget - cumulative)  # < length only for the boundary response
        tokens_used[i] = take
        cumulative += take
        selected.append(i)
    return BudgetSelection(tokens_used, selected, leftover, token_budget, list(lengths))


@dataclass
class ScoredResponse:
    """One rollout after scoring: everything needed to put it into a loss, now or (deferred) at the next step.

    old_logprobs are the sampling policy's per-token log-probs (π_θold); advantage was computed over the full
    group before any cut. A deferred response keeps both, so it is trained against the policy that sampled it.
    """

    prompt_index: int
    prompt_ids: list[int]
    response_ids: list[int]
    old_logprobs: torch.Tensor  # [len(response_ids)]
    advantage: float
    reward: float
    finished: bool = True
    ref_logprobs: torch.Tensor | None = None
    deferred_steps: int = 0  # how many steps this response has waited
    carry_key: int = 0  # place among the step's leftovers in the global order (deferred responses go first, in it)
    trainer_old_logprobs: torch.Tensor | None = None  # the trainer's own log-probs before the update (recompute)

    @property
    def length(self) -> int:
        return len(self.response_ids)


@dataclass
class RankStepPlan:
    """One rank's part of a step's C3PO selection (see `plan_c3po_ranks`)."""

    responses: list[ScoredResponse]  # this rank's selected responses, in the global selection order
    tokens_used: list[int]
    positions: list[int]  # each response's place in the selection order over all ranks (minibatch assignment)
    deferred: list[ScoredResponse]  # this rank's leftovers kept for the next step (leftover="defer")
    discarded: int  # this rank's leftovers dropped (leftover="discard")
    stale_dropped: int  # this rank's leftovers dropped by the staleness cap (max_defer_steps)
    total_tokens: int  # tokens that enter the loss, summed over the ranks that planned together
    token_budget: int  # Φ of the fill (per rank, or the global Φ)


def plan_c3po_ranks(fresh: Sequence[ScoredResponse], carried: Sequence[ScoredResponse], token_budget: int, *,
                    leftover: LeftoverPolicy = "discard", informative_first: bool = False,
                    max_defer_steps: int | None = None, rank: int = 0, gather=None) -> RankStepPlan:
    """The paper's greedy fill once over the global order, each rank keeping what it holds.

    The global order is what one process would see: carried-over responses first (by `carry_key`, their place
    among the previous step's leftovers), then this step's rollouts in prompt order (rank blocks in rank order,
    see ringctl/dist.py), the groups with a learning signal first when `informative_first` (a stable sort).
    `gather(obj)` returns every rank's obj in rank order (an all-gather); None plans this rank alone
    (budget_scope per_rank, or one process). Only lengths and flags travel between ranks, never tensors.
    Leftovers are deferred (leftover="defer") unless they already waited `max_defer_steps` steps (then dropped
    as stale), or discarded.
    """
    if leftover not in ("discard", "defer"):
        raise ValueError(f"leftover must be 'discard' or 'defer', got {leftover!r}")
    informative = {r.prompt_index for r in fresh if r.advantage != 0}
    pool = [*carried, *fresh]
    mine = [((0, r.carry_key), r.length, r.deferred_steps) for r in carried]
    mine += [((1, int(informative_first and r.prompt_index not in informative)), r.length, 0) for r in fresh]
    every = gather(mine) if gather is not None else [mine]
    me = rank if gather is not None else 0
    # (sort key, rank, local index, length, steps waited); carried keys are unique, fresh ties break by rank/index
    order = sorted(((key, k, i, length, waited) for k, rows in enumerate(every)
                    for i, (key, length, waited) in enumerate(rows)), key=lambda t: (t[0], t[1], t[2]))
    selection = select_responses_within_budget([t[3] for t in order], token_budget)
    responses, used, positions = [], [], []
    for pos, g in enumerate(selection.selected):
        _, k, i, _, _ = order[g]
        if k == me:
            responses.append(pool[i])
            used.append(selection.tokens_used[g])
            positions.append(pos)
    deferred: list[ScoredResponse] = []
    discarded = stale = place = 0
    for g in selection.leftover:
        _, k, i, _, waited = order[g]
        if leftover == "discard":
            discarded += k == me
        elif max_defer_steps is not None and waited >= max_defer_steps:
            stale += k == me
        else:
            if k == me:
                pool[i].deferred_steps, pool[i].carry_key = waited + 1, place
                deferred.append(pool[i])
            place += 1
    return RankStepPlan(responses, used, positions, deferred, discarded, stale, selection.total_tokens, token_budget)


def plan_grpo_ranks(fresh: Sequence[ScoredResponse], *, rank: int = 0, gather=None) -> RankStepPlan:
    """GRPO's step: all K responses of every prompt, untruncated, nothing deferred. Positions follow the global order
    (this rank's responses after those of lower ranks: `gather(obj)` returns every rank's obj in rank order, None for
    one process), so that the minibatch split does not depend on the number of ranks. `total_tokens` is this rank's."""
    counts = gather(len(fresh)) if gather is not None else [len(fresh)]
    before = sum(counts[:rank])
    lengths = [r.length for r in fresh]
    return RankStepPlan(list(fresh), lengths, [before + i for i in range(len(fresh))], [], 0, 0, sum(lengths), 0)
