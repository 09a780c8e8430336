"""Bounded-memory log-probs (issue 11 item 3): the output head scores only the response tokens, chunk_tokens at a
time under activation checkpointing, and no [N, R, V] tensor is built; log-probs, entropy, loss and gradients
equal the full-vocab path's (chunk_tokens=0) for any chunk size, with and without shared prompts and router
logits, with and without grad."""

from __future__ import annotations

import pytest
import torch

from ringctl.rl.loss import LossCoefficients, policy_loss
from ringctl.train.config import ModelConfig
from ringctl.train.logprobs import build_training_batch, response_logprobs
from ringctl.train.models import load_model_and_tokenizer

COEFS = LossCoefficients(kl_beta=0.0, entropy_coef=0.05, load_balance_coef=1e-2, z_loss_coef=1e-3)


@pytest.fixture(scope="module")
def tiny():
    model, _ = load_model_and_tokenizer(ModelConfig(), seed=0)
    return model.train()


def _batch(vocab: int, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    prompts = [[1] + torch.randint(3, vocab, (int(n),), generator=g).tolist() for n in (3, 6, 2)]
    rows_p = [p for p in prompts for _ in range(3)]  # groups of K = 3 share a prompt
    lengths = (5, 1, 9, 4, 7, 2, 8, 3, 6)
    rows_r = [torch.randint(3, vocab, (n,), generator=g).tolist() for n in lengths]
    batch = build_training_batch(rows_p, rows_r, tokens_used=[max(1, n - 1) for n in lengths])
    return batch, torch.randn(len(rows_r), generator=g)


def _run(model, batch, adv, chunk_tokens, share, router):
    model.zero_grad(set_to_none=True)
    out = response_logprobs(model, batch, temperature=0.7, with_entropy=True, output_router_logits=router,
                            share_prompts=share, chunk_tokens=chunk_tokens)
    loss, _ = policy_loss(out["logprobs"], out["logprobs"].detach() - 0.1, adv, batch.loss_mask, token_budget=40,
                          coefs=COEFS, entropy=out["entropy"], router_logits=out["router_logits"],
                          router_token_mask=out["router_token_mask"],
                          router_top_k=model.config.num_experts_per_tok if router else None)
    loss.backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    return out, loss.detach(), grads


@pytest.mark.parametrize("share", [False, True])
@pytest.mark.parametrize("router", [False, True])
def test_chunked_equals_full_vocab_in_values_loss_and_gradients(tiny, share, router):
    batch, adv = _batch(tiny.config.vocab_size)
    ref_out, ref_loss, ref_grads = _run(tiny, batch, adv, 0, share, router)
    scale = max(g.abs().max() for g in ref_grads.values())
    for chunk in (1, 7, None, 10_000):  # one token, uneven, the default, all at once
        out, loss, grads = _run(tiny, batch, adv, chunk, share, router)
        torch.testing.assert_close(out["logprobs"], ref_out["logprobs"], atol=1e-6, rtol=1e-6)
        torch.testing.assert_close(out["entropy"], ref_out["entropy"], atol=1e-6, rtol=1e-6)
        torch.testing.assert_close(loss, ref_loss, atol=1e-7, rtol=1e-6)
        assert (out["logprobs"][~batch.response_mask] == 0).all() and (out["entropy"][~batch.response_mask] == 0).all()
        if router:
            assert len(out["router_logits"]) == len(ref_out["router_logits"])
            for a, b in zip(out["router_logits"], ref_out["router_logits"], strict=True):
                torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-6)
            assert torch.equal(out["router_token_mask"], ref_out["router_token_mask"])
        else:
            assert out["router_logits"] is None and out["router_token_mask"] is None
        assert grads.keys() == ref_grads.keys()
        for name, g in ref_grads.items():
            torch.testing.assert_close(grads[name], g, atol=1e-6 * scale, rtol=1e-5, msg=f"chunk={chunk} {name}")


@pytest.mark.parametrize("share", [False, True])
def test_chunked_equals_full_vocab_without_grad(tiny, share):
    batch, _ = _batch(tiny.config.vocab_size, seed=1)
    with torch.no_grad():
        ref = response_logprobs(tiny, batch, 1.3, with_entropy=False, share_prompts=share, chunk_tokens=0)
        out = response_logprobs(tiny, batch, 1.3, with_entropy=False, share_prompts=share, chunk_tokens=3)
    assert out["entropy"] is None and not out["logprobs"].requires_grad
    torch.testing.assert_close(out["logprobs"], ref["logprobs"], atol=1e-6, rtol=1e-6)


def test_the_head_sees_only_response_tokens_a_chunk_at_a_time(tiny):
    """No [N, R, V] (nor [N, P + R, V]) logits: every head call is at most chunk_tokens rows, and they add up to
    the real response tokens (forward, then the backward's recomputation); the head is restored afterwards."""
    batch, adv = _batch(tiny.config.vocab_size)
    head = tiny.get_output_embeddings()
    with torch.no_grad():
        response_logprobs(tiny, batch, chunk_tokens=4)  # the one-off probe forward (see _chunked_head_supported)
    rows: list[int] = []
    handle = head.register_forward_hook(lambda m, i, o: rows.append(o.reshape(-1, o.shape[-1]).shape[0]))
    try:
        _run(tiny, batch, adv, 4, share=False, router=False)
    finally:
        handle.remove()
    m = int(batch.response_mask.sum())
    assert max(rows) == 4 and sum(rows) == 2 * m  # forward + recomputation in the backward
    assert tiny.get_output_embeddings() is head and tiny.lm_head is head
    assert "lm_head.weight" in dict(tiny.named_parameters(remove_duplicate=False))


def test_no_entropy_graph_when_it_is_only_logged(tiny):
    """entropy_grad=False (entropy_coef 0): the same entropy values, and nothing flows back from them."""
    batch, _ = _batch(tiny.config.vocab_size)
    ref = response_logprobs(tiny, batch, with_entropy=True, chunk_tokens=5)
    out = response_logprobs(tiny, batch, with_entropy=True, chunk_tokens=5, entropy_grad=False)
    torch.testing.assert_close(out["entropy"], ref["entropy"], atol=0, rtol=0)
    params = [p for p in tiny.parameters() if p.requires_grad]
    grads = torch.autograd.grad(out["entropy"].sum(), params, allow_unused=True)
    assert all(g is None or not g.any() for g in grads)
    assert any(g is not None and g.any() for g in torch.autograd.grad(ref["entropy"].sum(), params,
                                                                      allow_unused=True))
    assert response_logprobs(tiny, batch, with_entropy=False, chunk_tokens=5)["entropy"] is None


def test_models_that_post_process_logits_take_the_full_vocab_path(tiny):
    """Scoring the head's input is only exact when the forward returns the head's output as it is: a model that
    scales (or soft-caps) its logits is detected, by its config or by the probe, and scored the old way."""
    import transformers

    class ScaledLogits(type(tiny)):
        def forward(self, *args, **kwargs):
            out = super().forward(*args, **kwargs)
            out.logits = out.logits * 2.0
            return out

    model = ScaledLogits(tiny.config)
    model.load_state_dict(tiny.state_dict())
    batch, _ = _batch(tiny.config.vocab_size)
    with torch.no_grad():
        full = response_logprobs(model, batch, chunk_tokens=0)
        got = response_logprobs(model, batch, chunk_tokens=2)
        plain = response_logprobs(tiny, batch, chunk_tokens=0)
    torch.testing.assert_close(got["logprobs"], full["logprobs"], atol=1e-6, rtol=1e-6)
    assert not torch.allclose(got["logprobs"], plain["logprobs"])  # the scaling is really there
    assert model.lm_head is model.get_output_embeddings() and isinstance(model.lm_head, torch.nn.Linear)

    from ringctl.train.logprobs import _chunked_head_supported

    capped = transformers.Qwen3MoeConfig(**{**tiny.config.to_dict(), "final_logit_softcapping": 30.0})
    assert not _chunked_head_supported(type(tiny)(capped), "lm_head")
    assert _chunked_head_supported(tiny, "lm_head")


@pytest.mark.slow
def test_memory_bench_reports_a_bounded_peak():
    """bench/_logprob_memory.measure at a small size: both variants run through ringctl's response_logprobs and
    the chunked one peaks well below the full-vocab one."""
    from bench._logprob_memory import measure

    result = measure(tokens=4096, vocab=16384, hidden=64, chunk_tokens=256, threads=1)
    assert result["tokens"] == 4096 and result["chunk_tokens"] == 256
    assert result["naive_peak_mb"] > 1000  # ~5 float32 [4096, 16384] tensors (256 MiB each)
    assert result["logprob_peak_mb"] < 200, result  # ~5 [256, 16384] tensors (16 MiB each) and small change
    assert result["ratio"] > 4, result
