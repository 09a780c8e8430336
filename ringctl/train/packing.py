"""SFT data: chat formatting with loss on assistant tokens only, and packing several samples into one row.

Packed rows carry position ids that restart at 0 for every sample and no 2D attention mask: transformers then
builds a block-diagonal causal mask from the position ids (transformers 5.23 masking_utils: the packed-sequence
mask is built only when attention_mask is None and there is no KV cache, so training forwards pass
use_cache=False), so no token attends across a sample boundary; on GPU flash-attention reads the same position
ids as varlen boundaries.
"""

from __future__ import annotations

import bisect
import random
from dataclasses import dataclass

IGNORE = -100


@dataclass
class Sample:
    input_ids: list[int]
    labels: list[int]  # IGNORE on prompt tokens

    @property
    def loss_tokens(self) -> int:
        return sum(1 for x in self.labels if x != IGNORE)


@dataclass
class PackedRow:
    input_ids: list[int]
    position_ids: list[int]
    labels: list[int]
    real_tokens: int  # tokens that belong to a sample (the rest is padding)

    @property
    def loss_tokens(self) -> int:
        return sum(1 for x in self.labels if x != IGNORE)


def encode_prompt(tok, prompt: str) -> list[int]:
    """The user turn plus the assistant generation prompt, as the model sees it before answering."""
    ids = tok.apply_chat_template([{"role": "user", "content": prompt}], add_generation_prompt=True, tokenize=True)
    if hasattr(ids, "keys"):  # transformers may return a BatchEncoding
        ids = ids["input_ids"]
    return list(ids)


def encode_chat(tok, prompt: str, response: str, max_len: int) -> Sample:
    """<|im_start|>user ... <|im_start|>assistant\\n{response}<|im_end|>: loss on the response and the end token."""
    prompt_ids = encode_prompt(tok, prompt)
    response_ids = tok(response, add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
    ids = (list(prompt_ids) + response_ids)[:max_len]
    labels = ([IGNORE] * len(prompt_ids) + response_ids)[:max_len]
    return Sample(ids, labels)


def _row(samples: list[Sample], max_len: int, pad_id: int) -> PackedRow:
    ids = [t for s in samples for t in s.input_ids]
    pos = [p for s in samples for p in range(len(s.input_ids))]
    labels = [t for s in samples for t in s.labels]
    real = len(ids)
    pad = max_len - real
    # padding gets its own restarting positions: it forms one more "sample" nobody attends into
    return PackedRow(ids + [pad_id] * pad, pos + list(range(pad)), labels + [IGNORE] * pad, real)


def pack(samples: list[Sample], max_len: int, pad_id: int) -> list[PackedRow]:
    """Best-fit decreasing: longest sample first, each into the row whose free space fits it most tightly.

    This leaves about half the padding of filling rows in sample order (tiny synthetic data, samples of 77-113
    tokens: 11% instead of 22% at 256 tokens a row, 5.5% at 1024, close to what whole samples allow). Samples keep
    their original order inside a row; rows are shuffled per epoch.
    """
    order = sorted(range(len(samples)), key=lambda i: -len(samples[i].input_ids))
    rows: list[list[int]] = []
    free: list[tuple[int, int]] = []  # (free space, row index), sorted: bisect finds the tightest fit
    for i in order:
        n = len(samples[i].input_ids)
        if n > max_len:
            raise ValueError(f"sample {i} has {n} tokens > max_len {max_len}; truncate it when encoding")
        k = bisect.bisect_left(free, (n, -1))
        if k == len(free):
            rows.append([i])
            space, row = max_len - n, len(rows) - 1
        else:
            space, row = free.pop(k)
            rows[row].append(i)
            space -= n
        if space > 0:
            bisect.insort(free, (space, row))
    return [_row([samples[i] for i in sorted(members)], max_len, pad_id) for members in rows]


def unpacked(samples: list[Sample], max_len: int, pad_id: int) -> list[PackedRow]:
    """One sample per row (packing off), padded to max_len."""
    return [_row([s], max_len, pad_id) for s in samples]


def padding_fraction(rows: list[PackedRow]) -> float:
    total = sum(len(r.input_ids) for r in rows)
    return 1.0 - sum(r.real_tokens for r in rows) / max(total, 1)


def epoch_order(n_rows: int, epoch: int, seed: int) -> list[int]:
    order = list(range(n_rows))
    random.Random(seed * 1_000_003 + epoch).shuffle(order)
    return order


def to_tensors(rows: list[PackedRow]):
    import torch

    return (torch.tensor([r.input_ids for r in rows], dtype=torch.long),
            torch.tensor([r.position_ids for r in rows], dtype=torch.long),
            torch.tensor([r.labels for r in rows], dtype=torch.long))
