"""Token-budgeted micro-batches: the responses of one minibatch go through forward/backward in groups of at most
`max_tokens` padded tokens (rows x (longest prompt + longest trained response)), gradients accumulate, and the
optimizer steps once per minibatch. Under C3PO every micro-batch's loss is its token sum over Φ, so the summed
gradient is the minibatch's whatever the grouping (ringctl/rl/loss.py).
"""

from __future__ import annotations

from collections.abc import Sequence


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
