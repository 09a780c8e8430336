"""model.experts_implementation: `auto` picks the per-expert loop on CPU, and every choice computes the same
function (logits and gradients) as transformers' default, so the setting changes speed, never the model."""

from __future__ import annotations

import pytest
import torch

from ringctl.train.config import ModelConfig
from ringctl.train.models import apply_experts_implementation, build_tiny


def _loss_and_grads(model, ids):
    model.zero_grad()
    out = model(input_ids=ids, labels=ids)
    out.loss.backward()
    return out.logits.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


def test_auto_is_eager_without_cuda(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    model, _ = build_tiny(ModelConfig(), seed=0)
    assert model.config._experts_implementation == "eager"


def test_auto_keeps_transformers_default_with_cuda(monkeypatch):
    model, _ = build_tiny(ModelConfig(experts_implementation="grouped_mm"), seed=0)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert apply_experts_implementation(model, "auto") is None
    assert model.config._experts_implementation == "grouped_mm"


@pytest.mark.parametrize("other", ["grouped_mm", "batched_mm"])
def test_every_implementation_computes_the_same_model(other):
    eager, tok = build_tiny(ModelConfig(experts_implementation="eager"), seed=3)
    alt, _ = build_tiny(ModelConfig(experts_implementation=other), seed=3)
    assert alt.config._experts_implementation == other
    ids = torch.randint(5, len(tok), (2, 24), generator=torch.Generator().manual_seed(0))
    logits_a, grads_a = _loss_and_grads(eager, ids)
    logits_b, grads_b = _loss_and_grads(alt, ids)
    torch.testing.assert_close(logits_a, logits_b, rtol=1e-5, atol=1e-5)
    assert grads_a.keys() == grads_b.keys() and any("experts" in n for n in grads_a)
    for name in grads_a:
        torch.testing.assert_close(grads_a[name], grads_b[name], rtol=1e-4, atol=1e-6, msg=name)


def test_a_model_without_switchable_experts_is_left_alone():
    model = torch.nn.Linear(2, 2)
    assert apply_experts_implementation(model, "eager") is None
