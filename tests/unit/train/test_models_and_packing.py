from __future__ import annotations

import pytest
import torch

from ringctl.train.config import ModelConfig
from ringctl.train.models import build_tiny, count_parameters
from ringctl.train.packing import IGNORE, encode_chat, pack, padding_fraction, to_tensors


def test_tiny_model_and_char_tokenizer():
    model, tok = build_tiny(ModelConfig(), seed=0)
    assert 1_000_000 <= count_parameters(model) <= 5_000_000
    text = "compute 3+4\n<think>{x}</think> \\boxed{7}"
    assert tok.decode(tok(text, add_special_tokens=False)["input_ids"]) == text
    ids = tok.apply_chat_template([{"role": "user", "content": "hi"}], add_generation_prompt=True, tokenize=True)
    ids = ids["input_ids"] if hasattr(ids, "keys") else ids
    assert tok.decode(ids) == "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n"
    # same seed, same weights
    again, _ = build_tiny(ModelConfig(), seed=0)
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), again.state_dict().values()))


def test_loss_only_on_assistant_tokens():
    _, tok = build_tiny(ModelConfig(), seed=0)
    s = encode_chat(tok, "compute 1+1", "2", max_len=64)
    supervised = [t for t, lab in zip(s.input_ids, s.labels) if lab != IGNORE]
    assert tok.decode(supervised) == "2<|im_end|>"


def test_packed_forward_equals_separate_forwards():
    """Position ids restart per sample and no 2D mask: no attention across sample boundaries."""
    model, tok = build_tiny(ModelConfig(), seed=0)
    model.eval()
    samples = [encode_chat(tok, f"compute {a}+{b}", f"{a + b}", 64) for a, b in [(1, 2), (33, 4), (5, 67)]]
    (row,) = pack(samples, max_len=sum(len(s.input_ids) for s in samples) + 5, pad_id=tok.pad_token_id)
    assert padding_fraction([row]) > 0
    ids, pos, _ = to_tensors([row])
    with torch.no_grad():
        packed = model(input_ids=ids, position_ids=pos, use_cache=False).logits[0]
        offset = 0
        for s in samples:
            alone = model(input_ids=torch.tensor([s.input_ids])).logits[0]
            torch.testing.assert_close(packed[offset:offset + len(s.input_ids)], alone, atol=1e-4, rtol=1e-4)
            offset += len(s.input_ids)


def test_best_fit_packing_keeps_every_sample_once_and_beats_sequential_fill():
    from ringctl.train.packing import Sample, _row

    lengths = [90, 30, 120, 60, 100, 20, 70, 110, 40, 80, 50, 10]
    samples = [Sample(list(range(1, n + 1)), [IGNORE] + list(range(2, n + 1))) for n in lengths]
    rows = pack(samples, max_len=128, pad_id=0)
    assert all(len(r.input_ids) == len(r.position_ids) == len(r.labels) == 128 for r in rows)
    assert sum(r.real_tokens for r in rows) == sum(lengths)
    # each row is whole samples: positions restart at 0 where a sample starts
    starts = sorted(n for r in rows for n in _segment_lengths(r.position_ids[:r.real_tokens]))
    assert starts == sorted(lengths)
    sequential = []
    for s in samples:  # fill rows in sample order, the naive baseline
        if sequential and sum(len(x.input_ids) for x in sequential[-1]) + len(s.input_ids) <= 128:
            sequential[-1].append(s)
        else:
            sequential.append([s])
    assert len(rows) < len(sequential)
    assert padding_fraction(rows) < padding_fraction([_row(g, 128, 0) for g in sequential])
    with pytest.raises(ValueError, match="max_len"):
        pack([Sample([1] * 200, [1] * 200)], max_len=128, pad_id=0)


def _segment_lengths(positions: list[int]) -> list[int]:
    out: list[int] = []
    for p in positions:
        if p == 0:
            out.append(0)
        out[-1] += 1
    return out
