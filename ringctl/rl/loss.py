"""The C3PO loss (Ring-lite §3.2, Eq. 3) and the GRPO baseline loss, one function with a normalisation switch.

    L = -(1/Φ) Σ_{i∈S} Σ_t 1[y_it ∈ Ψ] · ( min(r_it A_i, clip(r_it, 1-ε, 1+ε) A_i) - β KL_it )
        - α_ent · H  +  α_bal · L_bal  +  α_z · L_z

    r_it   = exp(log π_θ(y_it) - log π_θold(y_it))
    KL_it  = exp(q - p) - (q - p) - 1,  p = log π_θ(y_it), q = log π_ref(y_it)   (the k3 estimator, unbiased for
             KL(π_θ || π_ref) under samples from π_θ, always >= 0)
    H      = token entropy over the tokens in Ψ, normalised like the policy term (under C3PO Σ H_it / Φ, i.e. the
             mean token entropy when exactly Φ tokens are selected); the bonus is subtracted so that it encourages
             exploration (the paper, Ring-lite §3.2, prints the sign the other way)

normalisation="token_budget" (C3PO) divides the token sum by the constant Φ: every token weighs the same, long
answers are not down-weighted, and micro-batch losses add up exactly to the step's loss.
normalisation="per_response" (GRPO) divides each response's token sum by its own length |y_i| (tokens in Ψ),
then averages over responses: L = -(1/|S|) Σ_i (1/|y_i|) Σ_t (...).

The router terms (MoE) are computed from the per-layer router logits over non-padding tokens, see
`load_balance_loss` and `router_z_loss`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import torch

Normalisation = Literal["token_budget", "per_response"]


@dataclass(frozen=True)
class LossCoefficients:
    """Ring-lite's values (arXiv 2506.14731): ε = 0.2, β = 1e-3, α_ent = 5e-4, α_bal = 1e-5, α_z = 1e-7."""

    clip_eps: float = 0.2
    kl_beta: float = 1e-3
    entropy_coef: float = 5e-4
    load_balance_coef: float = 1e-5
    z_loss_coef: float = 1e-7


def k3_kl(logprobs: torch.Tensor, ref_logprobs: torch.Tensor) -> torch.Tensor:
    """Per-token k3 estimator of KL(π_θ || π_ref): exp(q - p) - (q - p) - 1 with p = logprobs, q = ref_logprobs."""
    log_ratio = ref_logprobs - logprobs
    return torch.exp(log_ratio) - log_ratio - 1


def _layer_rows(router_logits: Sequence[torch.Tensor], token_mask: torch.Tensor | None
                ) -> tuple[list[torch.Tensor], torch.Tensor | None]:
    """Router logits per layer as [rows, E] float32, and the flat row mask (non-padding tokens) if given."""
    layers = [logits.reshape(-1, logits.shape[-1]).float() for logits in router_logits]
    if token_mask is None:
        return layers, None
    flat = token_mask.reshape(-1).to(device=layers[0].device, dtype=torch.float32)
    for logits in layers:
        if logits.shape[0] != flat.shape[0]:
            raise ValueError(f"router logits have {logits.shape[0]} rows but the token mask has {flat.shape[0]}")
    return layers, flat


def load_balance_loss(router_logits: Sequence[torch.Tensor], top_k: int,
                      token_mask: torch.Tensor | None = None) -> torch.Tensor:
    """Switch / Qwen-MoE load-balancing loss, averaged over layers:

        L_bal = mean_layers( E · Σ_e f_e · P_e )

    f_e = (top-k assignments to expert e) / (number of tokens)  (sums to k over experts, as in transformers'
          Qwen-MoE `load_balancing_loss_func`; uniform routing gives L_bal = k)
    P_e = mean router probability of expert e over the tokens
    Only tokens where token_mask is true count. Each layer is balanced on its own (transformers instead pools the
    rows of all layers before the product; with one layer both are identical). f_e is not differentiable, the
    gradient flows through P_e.
    """
    layers, flat = _layer_rows(router_logits, token_mask)
    losses = []
    for logits in layers:
        num_experts = logits.shape[-1]
        probs = torch.softmax(logits, dim=-1)
        chosen = torch.topk(probs, top_k, dim=-1).indices
        assignments = torch.zeros_like(probs).scatter_(1, chosen, 1.0)  # [rows, E] 0/1
        weights = torch.ones(probs.shape[0], device=probs.device) if flat is None else flat
        count = weights.sum().clamp_min(1.0)
        f = (assignments * weights.unsqueeze(1)).sum(0) / count
        p = (probs * weights.unsqueeze(1)).sum(0) / count
        losses.append(num_experts * (f * p).sum())
    return torch.stack(losses).mean()


def router_z_loss(router_logits: Sequence[torch.Tensor], token_mask: torch.Tensor | None = None) -> torch.Tensor:
    """Router z-loss (ST-MoE): L_z = mean over layers and non-padding tokens of logsumexp(router_logits)^2."""
    layers, flat = _layer_rows(router_logits, token_mask)
    losses = []
    for logits in layers:
        z = torch.logsumexp(logits, dim=-1) ** 2
        if flat is None:
            losses.append(z.mean())
        else:
            losses.append((z * flat).sum() / flat.sum().clamp_min(1.0))
    return torch.stack(losses).mean()


def policy_loss(
    logprobs: torch.Tensor,
    old_logprobs: torch.Tensor,
    advantages: torch.Tensor,
    loss_mask: torch.Tensor,
    *,
    normalisation: Normalisation = "token_budget",
    token_budget: int | None = None,
    coefs: LossCoefficients = LossCoefficients(),
    ref_logprobs: torch.Tensor | None = None,
    entropy: torch.Tensor | None = None,
    router_logits: Sequence[torch.Tensor] | None = None,
    router_token_mask: torch.Tensor | None = None,
    router_top_k: int | None = None,
    router_weight: float = 1.0,
    is_weights: torch.Tensor | None = None,
) -> tuple[torch.Tensor, dict[str, float]]:
    """C3PO / GRPO loss for N responses padded to T tokens (see the module docstring for the formula).

    logprobs:      [N, T] log π_θ(y_it) of the current policy (with grad)
    old_logprobs:  [N, T] log π_θold(y_it) from the sampler / before the update (no grad)
    advantages:    [N]    A_i, group-normalised before the budget cut
    loss_mask:     [N, T] 1 for the tokens in Ψ (padding and tokens beyond the budget are 0)
    token_budget:  Φ, required for normalisation="token_budget"; under C3PO loss_mask.sum() == Φ for the full
                   step, or a part of it for a micro-batch (dividing by the constant Φ keeps micro-batches additive)
    ref_logprobs:  [N, T] frozen reference log-probs; the KL term is skipped when kl_beta == 0 and none are given
    entropy:       [N, T] per-token entropy of π_θ (with grad, e.g. from `token_logprobs_and_entropy`)
    router_logits: per-layer [B*S, E] router logits of the same forward (output_router_logits=True);
    router_token_mask: [B, S] non-padding tokens of that forward (prompt and response); router_top_k: k.
    router_weight: the router terms' weight (a micro-batch's share of its minibatch's tokens: the router losses
                   are means over tokens, so micro-batches weigh them by their share, as the policy term does)
    is_weights:    [N, T] truncated importance weights min(pi_trainer_old / pi_rollout, cap) (no grad) that
                   multiply each token's clipped surrogate (TIS), or None

    Returns (loss, metrics); metrics are floats: loss, loss/policy, policy/clip_frac (fraction of tokens in Ψ
    where the clipped branch is active, i.e. the gradient is cut), policy/ratio_mean, kl (mean k3 over Ψ),
    entropy (mean over Ψ), tokens (|Ψ|, exactly Φ under C3PO), router/load_balance, router/z_loss.
    """
    mask = loss_mask.to(logprobs.dtype)
    if logprobs.shape != old_logprobs.shape or logprobs.shape != mask.shape:
        raise ValueError(f"shape mismatch: logprobs {tuple(logprobs.shape)}, old {tuple(old_logprobs.shape)}, "
                         f"mask {tuple(mask.shape)}")
    tokens = mask.sum()

    if normalisation == "token_budget":
        if token_budget is None or token_budget <= 0:
            raise ValueError("normalisation='token_budget' needs a positive token_budget (Φ)")

        def reduce(per_token: torch.Tensor) -> torch.Tensor:
            return (per_token * mask).sum() / token_budget
    elif normalisation == "per_response":
        response_tokens = mask.sum(dim=1)
        has_tokens = response_tokens > 0
        num_responses = has_tokens.sum().clamp_min(1)

        def reduce(per_token: torch.Tensor) -> torch.Tensor:
            per_response = (per_token * mask).sum(dim=1) / response_tokens.clamp_min(1)
            return per_response[has_tokens].sum() / num_responses
    else:
        raise ValueError(f"normalisation must be 'token_budget' or 'per_response', got {normalisation!r}")

    adv = advantages.to(logprobs.dtype).unsqueeze(1)
    ratio = torch.exp(logprobs - old_logprobs.detach())
    unclipped = ratio * adv
    clipped = torch.clamp(ratio, 1 - coefs.clip_eps, 1 + coefs.clip_eps) * adv
    surrogate = torch.minimum(unclipped, clipped)
    if is_weights is not None:
        surrogate = surrogate * is_weights.detach().to(surrogate.dtype)
    objective = surrogate

    kl = None
    if ref_logprobs is not None:
        kl = k3_kl(logprobs, ref_logprobs.detach())
        objective = objective - coefs.kl_beta * kl
    elif coefs.kl_beta != 0:
        raise ValueError("kl_beta > 0 needs ref_logprobs (log-probs of the frozen reference model)")

    policy_term = -reduce(objective)
    loss = policy_term
    if entropy is not None and coefs.entropy_coef != 0:
        loss = loss - coefs.entropy_coef * reduce(entropy)

    balance = z_loss = None
    if router_logits is not None:
        if router_top_k is None:
            raise ValueError("router_logits given without router_top_k")
        balance = load_balance_loss(router_logits, router_top_k, router_token_mask)
        z_loss = router_z_loss(router_logits, router_token_mask)
        loss = loss + router_weight * (coefs.load_balance_coef * balance + coefs.z_loss_coef * z_loss)

    def value(t: torch.Tensor) -> float:
        return float(t.detach())

    with torch.no_grad():
        denom = tokens.clamp_min(1)
        metrics = {
            "loss": value(loss),
            "loss/policy": value(policy_term),
            "policy/clip_frac": value(((clipped < unclipped).to(mask.dtype) * mask).sum() / denom),
            "policy/ratio_mean": value((ratio * mask).sum() / denom),
            "tokens": value(tokens),
        }
        if kl is not None:
            metrics["kl"] = value((kl * mask).sum() / denom)
        if entropy is not None:
            metrics["entropy"] = value((entropy * mask).sum() / denom)
        if balance is not None:
            metrics["router/load_balance"] = value(balance)
            metrics["router/z_loss"] = value(z_loss)
    return loss, metrics
