"""Engine interface (torch, one process): schedules, gradient accumulation, clipping, exact state save/load."""

from __future__ import annotations

import math

import pytest
import torch

from ringctl.train.engine import OptimSpec, build_engine, lr_at


def test_lr_schedules_with_warmup():
    const = OptimSpec(lr=1.0, warmup_steps=4, total_steps=20, schedule="constant")
    assert [lr_at(const, s) for s in range(6)] == [0.25, 0.5, 0.75, 1.0, 1.0, 1.0]
    cos = OptimSpec(lr=1.0, warmup_steps=2, total_steps=12, schedule="cosine", min_lr_ratio=0.1)
    assert lr_at(cos, 0) == 0.5 and lr_at(cos, 2) == pytest.approx(1.0)
    assert lr_at(cos, 7) == pytest.approx(0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * 0.5)))
    assert lr_at(cos, 12) == pytest.approx(0.1) and lr_at(cos, 50) == pytest.approx(0.1)
    values = [lr_at(cos, s) for s in range(2, 13)]
    assert values == sorted(values, reverse=True)


def _model(seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Linear(6, 8), torch.nn.Tanh(), torch.nn.Linear(8, 3))


def _data(seed: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(8, 6, generator=g), torch.randn(8, 3, generator=g)


def test_gradient_accumulation_equals_one_big_batch():
    """Two micro-batches whose losses add up to the batch loss give the same update as one backward."""
    x, y = _data()
    whole = build_engine(_model(), OptimSpec(lr=0.1, weight_decay=0.1, max_grad_norm=100.0))
    whole.backward(((whole(x) - y) ** 2).sum() / len(x))
    norm_whole = whole.step()
    split = build_engine(_model(), OptimSpec(lr=0.1, weight_decay=0.1, max_grad_norm=100.0, micro_batches=2))
    for part in (slice(0, 3), slice(3, 8)):
        split.backward(((split(x[part]) - y[part]) ** 2).sum() / len(x))
    norm_split = split.step()
    assert norm_split == pytest.approx(norm_whole, rel=1e-6)
    for a, b in zip(whole.module.parameters(), split.module.parameters()):
        torch.testing.assert_close(a, b)


def test_clipping_caps_the_update_and_reports_the_unclipped_norm():
    x, y = _data()
    engine = build_engine(_model(), OptimSpec(lr=0.1, max_grad_norm=1e-3))
    engine.backward(((engine(x) - y) ** 2).sum() * 100)
    norm = engine.step()
    assert norm > 1.0  # reported before clipping


def test_state_save_load_continues_exactly(tmp_path):
    x, y = _data()
    spec = OptimSpec(lr=0.05, warmup_steps=2, total_steps=6, schedule="cosine", weight_decay=0.01)

    def train(engine, steps: int) -> None:
        for _ in range(steps):
            engine.backward(((engine(x) - y) ** 2).mean())
            engine.step()

    straight = build_engine(_model(), spec)
    train(straight, 6)
    first = build_engine(_model(), spec)
    train(first, 3)
    first.save_state(tmp_path / "state")
    resumed = build_engine(_model(seed=7), spec)  # different init: everything must come from the state
    resumed.load_state(tmp_path / "state")
    assert resumed.steps == 3 and resumed.lr() == lr_at(spec, 3)
    train(resumed, 3)
    for a, b in zip(straight.module.parameters(), resumed.module.parameters()):
        torch.testing.assert_close(a, b, atol=0, rtol=0)
