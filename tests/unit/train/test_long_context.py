"""Training at long lengths (issue 23): SFT's loss through the chunked output head (never a [tokens, vocab] tensor)
and activation checkpointing, each giving the same loss and gradients as the plain path, in SFT, RL and
reward-model training; the setting's recipe default and per-stage override."""

from __future__ import annotations

import copy

import pytest
import torch

from ringctl.rl.loss import LossCoefficients, policy_loss
from ringctl.train.config import ModelConfig
from ringctl.train.logprobs import build_training_batch, response_logprobs, token_loss_sum
from ringctl.train.models import enable_activation_checkpointing, is_checkpointing, load_model_and_tokenizer
from ringctl.train.packing import IGNORE


@pytest.fixture(scope="module")
def tiny():
    model, _ = load_model_and_tokenizer(ModelConfig(), seed=0)
    return model.train()


def _packed(vocab: int, seed: int = 0):
    """Two packed rows of 40 tokens: samples with prompt tokens (IGNORE) and restarting position ids."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(3, vocab, (2, 40), generator=g)
    pos = torch.cat([torch.arange(15), torch.arange(25)]).repeat(2, 1)
    labels = ids.clone()
    labels[:, :5] = IGNORE
    labels[:, 15:22] = IGNORE
    labels[1, 30:] = IGNORE
    targets = torch.cat([labels[:, 1:], torch.full_like(labels[:, :1], IGNORE)], dim=1)
    return ids, pos, targets


def _grads(model) -> dict[str, torch.Tensor]:
    return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


def _sft(model, chunk_tokens, min_chunks=0, seed=0):
    model.zero_grad(set_to_none=True)
    ids, pos, targets = _packed(model.config.vocab_size, seed)
    loss, count = token_loss_sum(model, ids, pos, targets, IGNORE, chunk_tokens, min_chunks)
    (loss / count).backward()
    return loss.detach(), count, _grads(model)


def _assert_same_grads(grads, ref, what: str) -> None:
    scale = max(g.abs().max() for g in ref.values())
    assert grads.keys() == ref.keys(), what
    for name, g in ref.items():
        torch.testing.assert_close(grads[name], g, atol=1e-6 * scale, rtol=1e-5, msg=f"{what}: {name}")


def test_sft_loss_through_the_chunked_head_equals_the_full_vocab_loss_and_gradients(tiny):
    ref_loss, ref_count, ref_grads = _sft(tiny, 0)
    assert ref_count == int((_packed(tiny.config.vocab_size)[2] != IGNORE).sum()) > 0
    for chunk, min_chunks in ((1, 0), (7, 0), (None, 0), (7, 20)):  # one token, uneven, default, lockstep padding
        loss, count, grads = _sft(tiny, chunk, min_chunks)
        assert count == ref_count
        torch.testing.assert_close(loss, ref_loss, atol=1e-5, rtol=1e-6)
        _assert_same_grads(grads, ref_grads, f"chunk={chunk} min_chunks={min_chunks}")


def test_sft_head_never_sees_more_than_a_chunk(tiny):
    """The head is called on at most chunk_tokens rows at a time, only for tokens with a target, forward and the
    backward's recomputation; the [tokens, vocab] logits of the full path never exist."""
    ids, pos, targets = _packed(tiny.config.vocab_size)
    with torch.no_grad():
        token_loss_sum(tiny, ids[:, :4], pos[:, :4], targets[:, :4], IGNORE, 4)  # the one-off probe forward
    head = tiny.get_output_embeddings()
    rows: list[int] = []
    handle = head.register_forward_hook(lambda m, i, o: rows.append(o.reshape(-1, o.shape[-1]).shape[0]))
    try:
        _sft(tiny, 6)
    finally:
        handle.remove()
    n = int((targets != IGNORE).sum())
    assert max(rows) == 6 and sum(rows) == 2 * n  # forward + recomputation, target tokens only
    assert tiny.get_output_embeddings() is head


def _checkpointed(model):
    clone = copy.deepcopy(model)
    assert enable_activation_checkpointing(clone) and is_checkpointing(clone) and not is_checkpointing(model)
    return clone.train()


def _layer_calls(model, fn) -> int:
    layers = model.model.layers
    calls = [0]
    handles = [layer.mlp.register_forward_hook(lambda *a: calls.__setitem__(0, calls[0] + 1)) for layer in layers]
    try:
        fn()
    finally:
        for h in handles:
            h.remove()
    return calls[0]


def test_activation_checkpointing_gives_the_same_sft_gradients_and_recomputes(tiny):
    ckpt = _checkpointed(tiny)
    n_layers = len(tiny.model.layers)
    assert _layer_calls(tiny, lambda: _sft(tiny, None)) == n_layers  # nothing recomputed without it
    assert _layer_calls(ckpt, lambda: _sft(ckpt, None)) == 2 * n_layers  # forward + recomputation in backward
    for chunk in (None, 0):
        ref_loss, _, ref_grads = _sft(tiny, chunk, seed=3)
        loss, _, grads = _sft(ckpt, chunk, seed=3)
        torch.testing.assert_close(loss, ref_loss, atol=1e-6, rtol=1e-6)
        _assert_same_grads(grads, ref_grads, f"checkpointing, chunk={chunk}")


def test_activation_checkpointing_gives_the_same_rl_gradients_router_losses_included(tiny):
    """RL's policy forward/backward (chunked log-probs, entropy and the MoE router losses); with checkpointing the
    trainer forwards full rows (recomputed layers keep no KV cache), so the reference is full rows too."""
    g = torch.Generator().manual_seed(1)
    vocab = tiny.config.vocab_size
    prompts = [[1] + torch.randint(3, vocab, (n,), generator=g).tolist() for n in (4, 7, 2, 5)]
    responses = [torch.randint(3, vocab, (n,), generator=g).tolist() for n in (6, 3, 9, 5)]
    batch = build_training_batch(prompts, responses)
    adv = torch.randn(4, generator=g)
    coefs = LossCoefficients(kl_beta=0.0, entropy_coef=0.05, load_balance_coef=1e-2, z_loss_coef=1e-3)

    def run(model):
        model.zero_grad(set_to_none=True)
        out = response_logprobs(model, batch, 0.8, with_entropy=True, output_router_logits=True, chunk_tokens=5)
        loss, _ = policy_loss(out["logprobs"], out["logprobs"].detach() - 0.1, adv, batch.loss_mask,
                              token_budget=30, coefs=coefs, entropy=out["entropy"],
                              router_logits=out["router_logits"], router_token_mask=out["router_token_mask"],
                              router_top_k=model.config.num_experts_per_tok)
        loss.backward()
        return loss.detach(), _grads(model)

    ref_loss, ref_grads = run(tiny)
    loss, grads = run(_checkpointed(tiny))
    torch.testing.assert_close(loss, ref_loss, atol=1e-6, rtol=1e-6)
    _assert_same_grads(grads, ref_grads, "rl")


def test_activation_checkpointing_gives_the_same_reward_model_gradients():
    import torch.nn.functional as F
    from transformers import AutoModelForSequenceClassification

    from ringctl.rewards.rm_scorer import forward_scores
    from ringctl.train.models import tiny_model_config

    torch.manual_seed(0)
    config = tiny_model_config(ModelConfig().tiny)
    config.num_labels, config.pad_token_id = 1, 0
    rm = AutoModelForSequenceClassification.from_config(config).train()
    pairs = [[1, 5, 9, 12, 7], [1, 4, 4, 8], [1, 9, 3], [1, 6, 2, 2, 2, 11]]

    def run(model):
        model.zero_grad(set_to_none=True)
        scores = forward_scores(model, pairs, 0, "right")
        loss = -F.logsigmoid(scores[:2] - scores[2:]).sum()
        loss.backward()
        return loss.detach(), _grads(model)

    ref_loss, ref_grads = run(rm)
    loss, grads = run(_checkpointed(rm))
    torch.testing.assert_close(loss, ref_loss, atol=1e-6, rtol=1e-6)
    _assert_same_grads(grads, ref_grads, "reward model")


def test_a_model_without_gradient_checkpointing_is_refused():
    class Plain(torch.nn.Module):
        supports_gradient_checkpointing = False

    with pytest.raises(ValueError, match="activation_checkpointing: Plain does not support"):
        enable_activation_checkpointing(Plain())
    assert enable_activation_checkpointing(Plain(), enabled=False) is False


def test_the_setting_defaults_to_the_recipe_and_a_stage_overrides_it():
    from ringctl.recipe.loader import load_resolved

    text = """
name: t
backends: {activation_checkpointing: true}
stages:
  filter: {kind: data_filter, sources: [{type: synthetic, task: sft, n: 8}], splits: {sft: {}}}
  a: {kind: sft, data: filter.sft}
  b: {kind: sft, data: filter.sft, activation_checkpointing: false}
"""
    recipe = load_resolved(text, "r.yaml").recipe
    assert recipe.stages["a"].checkpointing(recipe) is True
    assert recipe.stages["b"].checkpointing(recipe) is False
    off = load_resolved(text.replace("backends: {activation_checkpointing: true}\n", ""), "r.yaml").recipe
    assert off.stages["a"].checkpointing(off) is False
