"""Token-budgeted micro-batches: the responses of one minibatch go through forward/backward in groups of at most
`max_tokens` padded tokens (rows x (longest prompt + longest trained response)), gradients accumulate, and the
optimizer steps once per minibatch. Under C3PO every micro-batch's loss is its token sum over Φ, so the summed
gradient is the minibatch's whatever the grouping (ringctl/rl/loss.py). `schedule_minibatches` lays out a step's
minibatches and micro-batches on every rank (ringctl/rl/trainer.py runs them).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass


def pack_micro_batches(prompt_lengths: Sequence[int], response_tokens: Sequence[int],
                       max_tokens: int | None) -> list[list[int]]:
    """Indices 0..n-1 in order, cut into consecutive micro-batches whose padded size stays within max_tokens (a
    row larger than max_tokens on its own gets a micro-batch of its own). None: one micro-batch of everything."""
    n = len(prompt_lengths)
    if len(response_tokens) != n:
        raise ValueError(f"{n} prompt lengths but {len(response_tokens)} response lengths")
    if n == 0:
        return []
    if max_tokens is None:
        return [list(range(n))]
    if max_tokens < 1:
        raise ValueError(f"max_tokens must be >= 1, got {max_tokens}")
    batches: list[list[int]] = []
    current: list[int] = []
    width_p = width_r = 0
    for i in range(n):
        p, r = max(width_p, prompt_lengths[i]), max(width_r, max(1, response_tokens[i]))
        if current and (len(current) + 1) * (p + r) > max_tokens:
            batches.append(current)
            current, p, r = [], prompt_lengths[i], max(1, response_tokens[i])
        current.append(i)
        width_p, width_r = p, r
    batches.append(current)
    return batches


@dataclass
class Minibatch:
    """One optimizer step's micro-batches on this rank. `micro[u]` indexes the step plan's responses ([] = a padding
    micro-batch: every rank runs as many as the rank with the most); `min_chunks[u]` is the output-head chunk count
    the log-prob pass must use (ZeRO-3 lockstep; 0 = its own); `tokens` and `responses` are what the loss is
    normalised by (over all ranks when the loss is a global sum)."""

    micro: list[list[int]]
    tokens: int
    responses: int
    min_chunks: list[int]


def schedule_minibatches(plan, hp, *, global_loss: bool, lockstep: bool, policy) -> list[Minibatch]:
    """The step's micro-batch schedule, the same number of micro-batches per minibatch on every rank. Every
    collective of a step's training part is here, in one order on every rank.

    Minibatch m holds the responses whose place in the global selection order is m mod `minibatches`, so that the
    split does not depend on the number of ranks. Under ZeRO-3 (`lockstep`) every rank must call every module as
    often as the others: the output head runs once per chunk of response tokens, so each micro-batch uses the
    largest chunk count over the ranks."""
    from ringctl.dist import max_over_ranks, rank_and_world, sum_over_ranks

    _, world = rank_and_world()
    responses, used = plan.responses, plan.tokens_used
    schedule = []
    for mb in range(hp.minibatches):
        idx = [j for j, pos in enumerate(plan.positions) if pos % hp.minibatches == mb]
        micro = [[idx[i] for i in group] for group in pack_micro_batches(
            [len(responses[j].prompt_ids) for j in idx], [used[j] for j in idx], hp.max_tokens_per_micro_batch)]
        count = max_over_ranks(len(micro)) if world > 1 else len(micro)
        tokens, n_responses = sum(used[j] for j in idx), len(idx)
        if world > 1 and global_loss:  # a global loss: shares are of the minibatch over all ranks
            total = sum_over_ranks({"tokens": float(tokens), "responses": float(n_responses)})
            tokens, n_responses = int(total["tokens"]), int(total["responses"])
        micro += [[]] * (count - len(micro))
        schedule.append(Minibatch(micro, tokens, n_responses, [0] * len(micro)))
    if lockstep and world > 1:
        from ringctl.train.logprobs import head_chunks

        for mb in schedule:
            for u, group in enumerate(mb.micro):
                tokens = sum(used[j] for j in group) if group else 1
                mb.min_chunks[u] = max_over_ranks(head_chunks(policy, tokens, hp.logprob_chunk_tokens))
    return schedule
