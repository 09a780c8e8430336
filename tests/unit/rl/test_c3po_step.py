"""The building blocks chained as the RL trainer chains them (ringctl/rl/trainer.py): rollouts -> rewards -> advantages -> budget ->
training batch -> loss -> optimizer step, on a tiny Qwen3-MoE."""

import pytest
import torch
import transformers

from ringctl.rl.advantages import score_rollouts
from ringctl.rl.budget import ScoredResponse, plan_c3po_ranks, plan_grpo_ranks
from ringctl.rl.loss import LossCoefficients, policy_loss
from ringctl.rollout.base import SamplingParams
from ringctl.rollout.hf import HFRolloutEngine
from ringctl.train.logprobs import build_training_batch, response_logprobs, token_logprobs_and_entropy

K = 4


def _model():
    config = transformers.Qwen3MoeConfig(
        vocab_size=32, hidden_size=64, intermediate_size=128, moe_intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, head_dim=16, num_experts=4, num_experts_per_tok=2,
        max_position_embeddings=128, eos_token_id=2, pad_token_id=0)
    torch.manual_seed(0)
    return transformers.Qwen3MoeForCausalLM(config)


def _step_inputs(model, token_budget):
    engine = HFRolloutEngine(model)
    prompts = [[1, 4, 5], [1, 6], [1, 7, 8, 9]]
    rollouts = engine.generate(prompts, n=K, params=SamplingParams(max_new_tokens=12, seed=0))
    rewards = [float(r.response_ids[0] % 2 == 0) for r in rollouts]  # a checkable property of the answer
    scored, groups = score_rollouts(rollouts, rewards, K)
    return scored, groups, plan_c3po_ranks(scored, [], token_budget, leftover="defer")


def test_one_c3po_step_trains_exactly_phi_tokens():
    model = _model()
    phi = 40
    scored, groups, step = _step_inputs(model, phi)
    assert groups.num_groups == 3 and groups.zero_variance_groups == 1  # prompt 0's answers all start even
    assert step.total_tokens == phi and step.deferred
    assert any(r.advantage != 0 for r in step.responses), "the reward should separate some responses"
    batch = build_training_batch([r.prompt_ids for r in step.responses], [r.response_ids for r in step.responses],
                                 step.tokens_used)
    assert int(batch.loss_mask.sum()) == phi
    old = torch.zeros(batch.loss_mask.shape)
    for i, r in enumerate(step.responses):
        old[i, :step.tokens_used[i]] = r.old_logprobs[:step.tokens_used[i]]
    adv = torch.tensor([r.advantage for r in step.responses])

    model.train()
    out = response_logprobs(model, batch, output_router_logits=True)
    loss, metrics = policy_loss(out["logprobs"], old, adv, batch.loss_mask, token_budget=phi,
                                coefs=LossCoefficients(kl_beta=0.0), entropy=out["entropy"],
                                router_logits=out["router_logits"], router_token_mask=batch.attention_mask,
                                router_top_k=2)
    assert metrics["tokens"] == phi
    # on-policy first epoch: the engine's sampling log-probs are the trainer's log-probs, ratio 1, nothing clipped
    assert metrics["policy/ratio_mean"] == pytest.approx(1.0, abs=1e-4) and metrics["policy/clip_frac"] == 0.0
    assert metrics["entropy"] > 0 and metrics["router/load_balance"] > 0
    loss.backward()
    assert model.model.layers[0].mlp.gate.weight.grad.abs().sum() > 0  # the router terms reach the router


def test_grpo_step_normalises_per_response():
    model = _model()
    scored, _, _ = _step_inputs(model, 40)
    sel = plan_grpo_ranks(scored)
    batch = build_training_batch([r.prompt_ids for r in scored], [r.response_ids for r in scored], sel.tokens_used)
    old = torch.zeros(batch.loss_mask.shape)
    for i, r in enumerate(scored):
        old[i, :r.length] = r.old_logprobs
    with torch.no_grad():
        out = response_logprobs(model, batch, with_entropy=False)
    _, metrics = policy_loss(out["logprobs"], old, torch.tensor([r.advantage for r in scored]), batch.loss_mask,
                             normalisation="per_response", coefs=LossCoefficients(kl_beta=0.0))
    assert metrics["tokens"] == sum(r.length for r in scored)


def test_entropy_of_uniform_logits_is_log_vocab():
    logp, entropy = token_logprobs_and_entropy(torch.zeros(2, 3, 8), torch.zeros(2, 3, dtype=torch.long))
    torch.testing.assert_close(entropy, torch.full((2, 3), torch.log(torch.tensor(8.0)).item()))
    torch.testing.assert_close(logp, torch.full((2, 3), -torch.log(torch.tensor(8.0)).item()))


def test_shared_prompt_forward_equals_the_full_rows():
    """share_prompts runs each distinct prompt once and the K responses on its KV cache: same log-probs, entropy,
    loss and gradients as forwarding every prompt + response row (the prompts' router rows count once)."""
    model = _model()
    scored, _, step = _step_inputs(model, 40)
    batch = build_training_batch([r.prompt_ids for r in step.responses], [r.response_ids for r in step.responses],
                                 step.tokens_used)
    assert len({tuple(r.prompt_ids) for r in step.responses}) < len(step.responses)  # prompts repeat
    adv = torch.tensor([r.advantage for r in step.responses])
    model.train()
    results = []
    for share in (False, True):
        model.zero_grad()
        out = response_logprobs(model, batch, share_prompts=share, output_router_logits=True)
        loss, _ = policy_loss(out["logprobs"], out["logprobs"].detach(), adv, batch.loss_mask, token_budget=40,
                              coefs=LossCoefficients(kl_beta=0.0, load_balance_coef=0.0, z_loss_coef=0.0),
                              entropy=out["entropy"])
        loss.backward()
        results.append((out, loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters()
                                             if p.grad is not None}))
    (plain, loss_plain, grads_plain), (shared, loss_shared, grads_shared) = results
    mask = batch.response_mask
    torch.testing.assert_close(shared["logprobs"][mask], plain["logprobs"][mask], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(shared["entropy"][mask], plain["entropy"][mask], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(loss_shared, loss_plain, atol=1e-6, rtol=1e-5)
    assert grads_shared.keys() == grads_plain.keys()
    for name in grads_plain:
        torch.testing.assert_close(grads_shared[name], grads_plain[name], atol=1e-6, rtol=1e-4, msg=name)
    # router rows: distinct prompts once + every response column, with a matching flat mask
    n_prompts = len({tuple(r.prompt_ids) for r in step.responses})
    rows = n_prompts * batch.response_start + batch.response_ids.numel()
    assert all(layer.shape[0] == rows for layer in shared["router_logits"])
    assert shared["router_token_mask"].shape == (rows,)
    n, width = batch.input_ids.shape
    for layer_plain, layer_shared in zip(plain["router_logits"], shared["router_logits"], strict=True):
        responses_plain = layer_plain.reshape(n, width, -1)[:, batch.response_start:].reshape(-1, layer_plain.shape[-1])
        responses_shared = layer_shared[n_prompts * batch.response_start:]
        keep = batch.attention_mask[:, batch.response_start:].reshape(-1).bool()
        torch.testing.assert_close(responses_shared[keep], responses_plain[keep], atol=1e-5, rtol=1e-5)
    # rows that share no prompt take the plain path
    single = build_training_batch([[1, 4, 5], [1, 6]], [[3, 4], [5]])
    assert response_logprobs(model, single, share_prompts=True)["logprobs"].shape == (2, 2)


def test_informative_first_puts_groups_with_signal_first_and_keeps_order():
    """fill_order informative_first: the groups with signal first (prompt and sample order kept), so under a
    budget the zero-advantage groups only fill what is left."""
    adv = {0: [0.0, 0.0], 1: [1.0, -1.0], 2: [0.0, 0.0], 3: [-0.5, 0.5]}
    responses = [ScoredResponse(prompt_index=p, prompt_ids=[1], response_ids=[5] * 10, old_logprobs=torch.zeros(10),
                                advantage=a, reward=0.0) for p in adv for a in adv[p]]
    tag = {id(r): (r.prompt_index, i % 2) for i, r in enumerate(responses)}
    step = plan_c3po_ranks(responses, [], 45, informative_first=True)
    assert [tag[id(r)] for r in step.responses] == [(1, 0), (1, 1), (3, 0), (3, 1), (0, 0)]
    assert step.tokens_used == [10, 10, 10, 10, 5]
