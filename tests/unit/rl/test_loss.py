import math

import pytest
import torch
import transformers

from ringctl.rl.loss import LossCoefficients, k3_kl, load_balance_loss, policy_loss, router_z_loss

NO_EXTRAS = LossCoefficients(clip_eps=0.2, kl_beta=0.0, entropy_coef=0.0, load_balance_coef=0.0, z_loss_coef=0.0)


def _hand_example():
    """Two responses, T = 3, eps = 0.2, phi = 5 (response 1's third token is beyond the budget: masked).

    response 0, A = +1, r = [1.0, 1.5, 0.5]:
        unclipped r*A = [1.0, 1.5, 0.5], clipped clip(r)*A = [1.0, 1.2, 0.8], min = [1.0, 1.2, 0.5] -> sum 2.7
        (clip active on token 1: 1.2 < 1.5)
    response 1, A = -1, r = [1.5, 0.5, (2.0 masked)]:
        unclipped = [-1.5, -0.5], clipped = [-1.2, -0.8], min = [-1.5, -0.8] -> sum -2.3
        (clip active on token 1: -0.8 < -0.5)
    surrogate sum = 2.7 - 2.3 = 0.4; C3PO policy loss = -0.4 / 5 = -0.08; clip_frac = 2 / 5 = 0.4
    """
    ratios = torch.tensor([[1.0, 1.5, 0.5], [1.5, 0.5, 2.0]])
    old = torch.full((2, 3), -1.0)
    new = old + ratios.log()
    adv = torch.tensor([1.0, -1.0])
    mask = torch.tensor([[1, 1, 1], [1, 1, 0]])
    return new, old, adv, mask


def test_c3po_loss_hand_example():
    new, old, adv, mask = _hand_example()
    loss, m = policy_loss(new, old, adv, mask, token_budget=5, coefs=NO_EXTRAS)
    assert float(loss) == pytest.approx(-0.08, abs=1e-6)
    assert m["policy/clip_frac"] == pytest.approx(0.4)
    assert m["tokens"] == 5


def test_c3po_loss_with_k3_kl_and_entropy_hand_example():
    new, old, adv, mask = _hand_example()
    # reference one nat-of-log(2) above the policy on token (0, 0), equal elsewhere:
    # k3 = exp(log 2) - log 2 - 1 = 2 - 0.693147 - 1 = 0.306853 on that token, 0 on the others
    ref = new.detach().clone()
    ref[0, 0] += math.log(2)
    # entropy per token [[1, 2, 3], [4, 5, (6 masked)]]: sum over Psi = 15
    entropy = torch.tensor([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]])
    coefs = LossCoefficients(clip_eps=0.2, kl_beta=0.1, entropy_coef=0.01, load_balance_coef=0.0, z_loss_coef=0.0)
    loss, m = policy_loss(new, old, adv, mask, token_budget=5, coefs=coefs, ref_logprobs=ref, entropy=entropy)
    # policy: -(0.4 - 0.1 * 0.306853) / 5 = -0.0738629; entropy bonus: -0.01 * 15 / 5 = -0.03
    k3 = 2 - math.log(2) - 1
    assert float(loss) == pytest.approx(-(0.4 - 0.1 * k3) / 5 - 0.03, abs=1e-6)
    assert float(loss) == pytest.approx(-0.1038629, abs=1e-6)
    assert m["kl"] == pytest.approx(k3 / 5, abs=1e-6)
    assert m["entropy"] == pytest.approx(3.0)


def test_grpo_per_response_normalisation_hand_example():
    new, old, adv, mask = _hand_example()
    # response 0: 2.7 / 3 = 0.9; response 1: -2.3 / 2 = -1.15; mean = -0.125 -> loss 0.125
    loss, _ = policy_loss(new, old, adv, mask, normalisation="per_response", coefs=NO_EXTRAS)
    assert float(loss) == pytest.approx(0.125, abs=1e-6)


def test_k3_is_zero_at_equality_and_positive_otherwise():
    p = torch.tensor([-1.0, -2.0, -0.5])
    assert torch.equal(k3_kl(p, p), torch.zeros(3))
    assert (k3_kl(p, p + torch.tensor([0.3, -0.7, 1.0])) > 0).all()


def test_kl_needs_reference_unless_beta_is_zero():
    new, old, adv, mask = _hand_example()
    with pytest.raises(ValueError, match="ref_logprobs"):
        policy_loss(new, old, adv, mask, token_budget=5, coefs=LossCoefficients(kl_beta=1e-3))
    _, m = policy_loss(new, old, adv, mask, token_budget=5, coefs=NO_EXTRAS)
    assert "kl" not in m
    with pytest.raises(ValueError, match="token_budget"):
        policy_loss(new, old, adv, mask, coefs=NO_EXTRAS)


def test_token_budget_loss_is_additive_over_micro_batches():
    torch.manual_seed(0)
    new, old = torch.randn(6, 4) * 0.1 - 1, torch.full((6, 4), -1.0)
    adv, mask = torch.randn(6), torch.rand(6, 4) > 0.3
    phi = int(mask.sum())
    full, _ = policy_loss(new, old, adv, mask, token_budget=phi, coefs=NO_EXTRAS)
    halves = [policy_loss(new[s], old[s], adv[s], mask[s], token_budget=phi, coefs=NO_EXTRAS)[0]
              for s in (slice(0, 3), slice(3, 6))]
    assert float(full) == pytest.approx(float(sum(halves)), abs=1e-6)


def _router_example():
    """One layer, 2 experts, top-1, 4 tokens, the last one padding.

    probs: t0 [3/4, 1/4] -> e0; t1 [1/5, 4/5] -> e1; t2 [9/10, 1/10] -> e0; (t3 [e^5, 1] masked)
    f = [2/3, 1/3]; P = [(0.75 + 0.2 + 0.9) / 3, (0.25 + 0.8 + 0.1) / 3] = [1.85/3, 1.15/3]
    L_bal = 2 * (2/3 * 1.85/3 + 1/3 * 1.15/3) = 2 * 4.85 / 9 = 1.0777...
    z: logsumexp = [log 4, log 5, log 10] -> L_z = (log(4)^2 + log(5)^2 + log(10)^2) / 3
    """
    logits = torch.tensor([[math.log(3), 0.0], [0.0, math.log(4)], [math.log(9), 0.0], [5.0, 0.0]])
    mask = torch.tensor([[1, 1, 1, 0]])
    return logits, mask


def test_load_balance_loss_hand_example_and_transformers_reference():
    logits, mask = _router_example()
    got = load_balance_loss((logits,), top_k=1, token_mask=mask)
    assert float(got) == pytest.approx(2 * 4.85 / 9, abs=1e-6)
    # one layer: identical to transformers' Qwen3-MoE implementation (which pools layers before the product)
    from transformers.models.qwen3_moe.modeling_qwen3_moe import load_balancing_loss_func

    ref = load_balancing_loss_func((logits,), num_experts=2, top_k=1, attention_mask=mask)
    assert float(got) == pytest.approx(float(ref), abs=1e-6)
    # two layers are averaged layer by layer (here with all 4 tokens unmasked)
    balanced = torch.tensor([[0.0, 1.0], [1.0, 0.0], [0.0, 1.0], [1.0, 0.0]])
    two = load_balance_loss((logits, balanced), top_k=1, token_mask=torch.tensor([[1, 1, 1, 1]]))
    assert float(two) == pytest.approx((load_balance_loss((logits,), 1, torch.tensor([[1, 1, 1, 1]]))
                                        + load_balance_loss((balanced,), 1)).item() / 2, abs=1e-6)


def test_router_z_loss_hand_example():
    logits, mask = _router_example()
    expected = (math.log(4) ** 2 + math.log(5) ** 2 + math.log(10) ** 2) / 3  # = 3.2713...
    assert float(router_z_loss((logits,), mask)) == pytest.approx(expected, abs=1e-6)


def test_router_terms_enter_the_loss_with_their_coefficients():
    new, old, adv, mask = _hand_example()
    logits, rmask = _router_example()
    coefs = LossCoefficients(clip_eps=0.2, kl_beta=0.0, entropy_coef=0.0, load_balance_coef=0.5, z_loss_coef=0.25)
    loss, m = policy_loss(new, old, adv, mask, token_budget=5, coefs=coefs, router_logits=(logits,),
                          router_token_mask=rmask, router_top_k=1)
    z = (math.log(4) ** 2 + math.log(5) ** 2 + math.log(10) ** 2) / 3
    assert float(loss) == pytest.approx(-0.08 + 0.5 * 2 * 4.85 / 9 + 0.25 * z, abs=1e-6)
    assert m["router/load_balance"] == pytest.approx(2 * 4.85 / 9, abs=1e-6)


def test_router_losses_from_a_real_qwen3_moe_forward_ignore_padding():
    cfg = transformers.Qwen3MoeConfig(vocab_size=32, hidden_size=64, intermediate_size=128, moe_intermediate_size=64,
                                      num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2, head_dim=16,
                                      num_experts=4, num_experts_per_tok=2, max_position_embeddings=64)
    torch.manual_seed(0)
    model = transformers.Qwen3MoeForCausalLM(cfg).eval()
    ids = torch.randint(3, 32, (2, 6))
    attn = torch.tensor([[0, 0, 1, 1, 1, 1], [1, 1, 1, 1, 1, 1]])
    with torch.no_grad():
        out = model(input_ids=ids, attention_mask=attn, output_router_logits=True)
    assert len(out.router_logits) == 2 and out.router_logits[0].shape == (12, 4)
    masked = load_balance_loss(out.router_logits, top_k=2, token_mask=attn)
    # same value as computing on the real tokens only
    keep = attn.reshape(-1).bool()
    only_real = load_balance_loss(tuple(layer[keep] for layer in out.router_logits), top_k=2)
    assert float(masked) == pytest.approx(float(only_real), abs=1e-6)
    assert float(router_z_loss(out.router_logits, attn)) == pytest.approx(
        float(router_z_loss(tuple(layer[keep] for layer in out.router_logits))), abs=1e-6)


def test_gradient_moves_policy_in_the_direction_of_the_advantage():
    # per-token logits over a 5-token vocabulary; sampled tokens fixed; old policy = initial policy (r = 1)
    torch.manual_seed(0)
    logits = torch.randn(2, 3, 5, requires_grad=True)
    tokens = torch.tensor([[0, 1, 2], [3, 4, 0]])
    adv = torch.tensor([1.0, -1.0])
    mask = torch.ones(2, 3)

    def logp(lg):
        return torch.log_softmax(lg, -1).gather(-1, tokens.unsqueeze(-1)).squeeze(-1)

    old = logp(logits).detach()
    loss, _ = policy_loss(logp(logits), old, adv, mask, token_budget=6, coefs=NO_EXTRAS)
    loss.backward()
    with torch.no_grad():
        stepped = logits - 0.5 * logits.grad
    delta = logp(stepped) - old
    assert (delta[0] > 0).all()  # positive advantage: sampled tokens become more likely
    assert (delta[1] < 0).all()  # negative advantage: less likely
    # and the clipped objective (the negated loss) increased
    after, _ = policy_loss(logp(stepped), old, adv, mask, token_budget=6, coefs=NO_EXTRAS)
    assert float(after.detach()) < float(loss.detach())


def test_clipped_tokens_get_no_policy_gradient():
    # r = 1.5 > 1 + eps with A > 0: min picks the clipped (constant) branch -> zero gradient
    # r = 1.1 inside the trust region: gradient d/dlogp (-r A / phi) = -1.1 / 2
    old = torch.tensor([[-1.0, -1.0]])
    new = (old + torch.tensor([[math.log(1.5), math.log(1.1)]])).requires_grad_(True)
    loss, m = policy_loss(new, old, torch.tensor([1.0]), torch.ones(1, 2), token_budget=2, coefs=NO_EXTRAS)
    loss.backward()
    torch.testing.assert_close(new.grad, torch.tensor([[0.0, -1.1 / 2]]))
    assert m["policy/clip_frac"] == pytest.approx(0.5)
