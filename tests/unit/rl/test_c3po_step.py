"""The building blocks chained as the RL stage will chain them: rollouts -> rewards -> advantages -> budget ->
training batch -> loss -> optimizer step, on a tiny Qwen3-MoE."""

import pytest
import torch
import transformers

from ringctl.rl.advantages import score_rollouts
from ringctl.rl.budget import plan_c3po_step, select_whole_groups
from ringctl.rl.logprobs import build_training_batch, response_logprobs, token_logprobs_and_entropy
from ringctl.rl.loss import LossCoefficients, policy_loss
from ringctl.rollout.base import SamplingParams
from ringctl.rollout.hf import HFRolloutEngine

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
    return scored, groups, plan_c3po_step(scored, token_budget, leftover="defer")


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
    sel = select_whole_groups([r.length for r in scored], K)
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
