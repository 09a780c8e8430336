"""SFT data: chat formatting with loss on assistant tokens only, and packing several samples into one row.

Packed rows carry position ids that restart at 0 for every sample and no 2D attention mask: transformers then
builds a block-diagonal causal mask from the position ids (masking_utils.find_packed_sequence_indices; only
without a KV cache, so training forwards pass use_cache=False), so no
token attends across a sample boundary; on GPU flash-attention reads the same position ids as varlen boundaries.
"""

from __future__ import annotations

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


def encode_chat(tok, prompt: str, response: str, max_len: int) -> Sample:
    """<|im_start|>user ... <|im_start|>assistant\\n{response}<|im_end|>: loss on the response and the end token."""
    prompt_ids = tok.apply_chat_template([{"role": "user", "content": prompt}], add_generation_prompt=True,
                                         tokenize=True)
    if hasattr(prompt_ids, "keys"):
        prompt_ids = prompt_ids["input_ids"]
    response_ids = tok(response, add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
    ids = (list(prompt_ids) + response_ids)[:max_len]
    labels = ([IGNORE] * len(prompt_ids) + response_ids)[:max_len]
    return Sample(ids, labels)


def pack(samples: list[Sample], max_len: int, pad_id: int) -> list[PackedRow]:
    """Greedy packing in sample order: a row takes samples until the next one does not fit, then is padded."""
    rows: list[PackedRow] = []
    ids: list[int] = []
    pos: list[int] = []
    labels: list[int] = []

    def flush() -> None:
        if ids:
            real = len(ids)
            pad = max_len - real
            rows.append(PackedRow(ids + [pad_id] * pad, pos + list(range(pad)), labels + [IGNORE] * pad, real))
            ids.clear(), pos.clear(), labels.clear()

    for s in samples:
        if len(ids) + len(s.input_ids) > max_len:
            flush()
        ids.extend(s.input_ids)
        pos.extend(range(len(s.input_ids)))
        labels.extend(s.labels)
    flush()
    return rows


def unpacked(samples: list[Sample], max_len: int, pad_id: int) -> list[PackedRow]:
    """One sample per row (packing off), padded to max_len."""
    return [row for s in samples for row in pack([s], max_len, pad_id)]


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
