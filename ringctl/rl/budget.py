"""Which rollout tokens enter the loss this step: the C3PO token budget and the GRPO sample-level batch.

C3PO (Ring-lite §3.2, Eq. 2): with a token budget Φ, take responses greedily in rollout order (prompt by prompt,
responses in the order they were sampled) until the cumulative count reaches Φ:

    Σ_{j<N} |y_j| < Φ ≤ Σ_{j≤N} |y_j|

Response N (the boundary response) is truncated so that exactly Φ tokens enter the loss; responses after N are
"leftover": discarded (the paper) or deferred to the front of the next step's batch (`leftover: defer`, the
C3PO++ spirit), keeping the advantages and old log-probs they were scored with.

Budget scope: `per_rank` gives every rank its own Φ (the paper's Φ = 409,600 reads as per device);
`global` splits Φ over the ranks (Φ / world_size each, the rollouts assigned round-robin or by a balanced
greedy) so that exactly Φ tokens enter the loss across all ranks.

Only index arithmetic lives here (pure Python); the tensors (token masks) are built by `token_mask`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import torch

LeftoverPolicy = Literal["discard", "defer"]
BudgetScope = Literal["per_rank", "global"]
RankAssignment = Literal["round_robin", "balanced"]


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


def select_whole_groups(lengths: Sequence[int], samples_per_prompt: int, max_prompts: int | None = None
                        ) -> BudgetSelection:
    """GRPO baseline batch: all K responses of the first `max_prompts` prompts (all prompts by default), untruncated.

    The token count then varies with response length from step to step, which is what C3PO fixes; the GRPO loss
    normalises each response by 1/|y_i| (loss.py, normalisation="per_response").
    """
    if len(lengths) % samples_per_prompt:
        raise ValueError(f"{len(lengths)} responses are not whole groups of {samples_per_prompt}")
    num_prompts = len(lengths) // samples_per_prompt
    keep = num_prompts if max_prompts is None else min(max_prompts, num_prompts)
    cut = keep * samples_per_prompt
    tokens_used = [int(n) if i < cut else 0 for i, n in enumerate(lengths)]
    return BudgetSelection(tokens_used, list(range(cut)), list(range(cut, len(lengths))), None, list(lengths))


def rank_token_budget(token_budget: int, world_size: int, scope: BudgetScope) -> int:
    """Φ that one rank fills: Φ itself (per_rank) or Φ / world_size (global; must divide exactly)."""
    if scope == "per_rank":
        return token_budget
    if scope == "global":
        if token_budget % world_size:
            raise ValueError(f"global token_budget {token_budget} is not divisible by world size {world_size}")
        return token_budget // world_size
    raise ValueError(f"budget scope must be 'per_rank' or 'global', got {scope!r}")


def assign_to_ranks(lengths: Sequence[int], world_size: int, how: RankAssignment = "round_robin") -> list[list[int]]:
    """Split the global rollout batch over ranks; each rank's indices stay in rollout order.

    round_robin: response i goes to rank i % world_size.
    balanced: longest-first greedy onto the rank with the fewest tokens so far (ties: lowest rank), so that every
    rank holds about the same number of tokens and can fill its Φ / world_size.
    """
    if world_size < 1:
        raise ValueError("world_size must be >= 1")
    if how == "round_robin":
        return [list(range(rank, len(lengths), world_size)) for rank in range(world_size)]
    if how != "balanced":
        raise ValueError(f"assignment must be 'round_robin' or 'balanced', got {how!r}")
    shares: list[list[int]] = [[] for _ in range(world_size)]
    totals = [0] * world_size
    for i in sorted(range(len(lengths)), key=lambda j: (-lengths[j], j)):
        rank = min(range(world_size), key=lambda r: (totals[r], r))
        shares[rank].append(i)
        totals[rank] += lengths[i]
    return [sorted(share) for share in shares]


@dataclass(frozen=True)
class GlobalSelection:
    """A `global`-scope selection: per rank, the global indices it trains on and how many tokens of each."""

    shares: list[list[int]]  # global response indices per rank (rollout order)
    per_rank: list[BudgetSelection]  # selections over each rank's share (indices into that share)

    def tokens_used(self) -> list[int]:
        """Tokens used per global response index."""
        n = sum(len(s) for s in self.shares)
        used = [0] * n
        for share, sel in zip(self.shares, self.per_rank, strict=True):
            for local, global_index in enumerate(share):
                used[global_index] = sel.tokens_used[local]
        return used

    @property
    def total_tokens(self) -> int:
        return sum(sel.total_tokens for sel in self.per_rank)


def select_global(lengths: Sequence[int], token_budget: int, world_size: int,
                  how: RankAssignment = "balanced") -> GlobalSelection:
    """budget_scope=global: assign the global batch to ranks, then each rank fills Φ / world_size greedily.

    When every rank's share holds at least Φ / world_size tokens, exactly Φ tokens enter the loss in total.
    """
    per_rank_budget = rank_token_budget(token_budget, world_size, "global")
    shares = assign_to_ranks(lengths, world_size, how)
    selections = [select_responses_within_budget([lengths[i] for i in share], per_rank_budget) for share in shares]
    return GlobalSelection(shares, selections)


def token_mask(tokens_used: Sequence[int], max_len: int | None = None, device: Any = None) -> torch.Tensor:
    """[n, max_len] bool mask: True for the first tokens_used[i] response tokens of row i (the set Ψ)."""
    width = max(tokens_used, default=0) if max_len is None else max_len
    used = torch.as_tensor(list(tokens_used), dtype=torch.long, device=device)
    return torch.arange(width, device=device).unsqueeze(0) < used.unsqueeze(1)


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

    @property
    def length(self) -> int:
        return len(self.response_ids)


@dataclass
class StepBatch:
    """The responses one step trains on, with tokens_used[i] leading tokens of responses[i] in the loss."""

    responses: list[ScoredResponse]
    tokens_used: list[int]
    deferred: list[ScoredResponse]  # to put first into the next step's batch (leftover="defer")
    discarded: int  # responses dropped after the cut (leftover="discard")
    token_budget: int

    @property
    def total_tokens(self) -> int:
        return sum(self.tokens_used)


def plan_c3po_step(fresh: Sequence[ScoredResponse], token_budget: int, leftover: LeftoverPolicy = "discard",
                   carried_over: Sequence[ScoredResponse] = ()) -> StepBatch:
    """C3PO batch for one step (one rank's view): carried-over responses first, then this step's rollouts.

    leftover="defer" returns the responses after the cut in `deferred` (their deferred_steps incremented);
    leftover="discard" drops them and counts them in `discarded`.
    """
    if leftover not in ("discard", "defer"):
        raise ValueError(f"leftover must be 'discard' or 'defer', got {leftover!r}")
    candidates = [*carried_over, *fresh]
    selection = select_responses_within_budget([r.length for r in candidates], token_budget)
    after_cut = [candidates[i] for i in selection.leftover]
    deferred: list[ScoredResponse] = []
    if leftover == "defer":
        for response in after_cut:
            response.deferred_steps += 1
            deferred.append(response)
    return StepBatch(
        responses=[candidates[i] for i in selection.selected],
        tokens_used=[selection.tokens_used[i] for i in selection.selected],
        deferred=deferred,
        discarded=0 if leftover == "defer" else len(after_cut),
        token_budget=token_budget,
    )
