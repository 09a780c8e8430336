"""Per-token log-probs and entropy of response tokens from a causal LM, and the padded training batch.

The training forward must score exactly what the sampler scored: log_softmax(logits / temperature) of the
sampled token (the rollout engines return the same quantity as old log-probs, see ringctl/rollout/base.py).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch


def token_logprobs_and_entropy(logits: torch.Tensor, targets: torch.Tensor, temperature: float = 1.0,
                               with_entropy: bool = True) -> tuple[torch.Tensor, torch.Tensor | None]:
    """logits [..., V] predicting targets [...]: (log p(target), entropy H = -Σ_v p_v log p_v), both [...]."""
    log_probs = torch.log_softmax(logits.float() / temperature, dim=-1)
    picked = log_probs.gather(-1, targets.unsqueeze(-1)).squeeze(-1)
    if not with_entropy:
        return picked, None
    entropy = -(log_probs.exp() * log_probs).sum(-1)
    return picked, entropy


@dataclass
class TrainingBatch:
    """Prompt + response rows, left-padded prompts so that every response starts at column `response_start`.

    input_ids/attention_mask/position_ids: [N, P + R]; response_mask: [N, R] (real response tokens);
    loss_mask: [N, R] (the first tokens_used[i] response tokens: the set Ψ).
    """

    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    position_ids: torch.Tensor
    response_ids: torch.Tensor  # [N, R], pad_id where absent
    response_mask: torch.Tensor
    loss_mask: torch.Tensor
    response_start: int

    def to(self, device: Any) -> TrainingBatch:
        return TrainingBatch(**{k: (v.to(device) if isinstance(v, torch.Tensor) else v)
                                for k, v in self.__dict__.items()})


def build_training_batch(prompts: Sequence[Sequence[int]], responses: Sequence[Sequence[int]],
                         tokens_used: Sequence[int] | None = None, pad_id: int = 0) -> TrainingBatch:
    """Left-pad prompts to P, right-pad responses to R (R = longest response's tokens_used: tokens beyond the
    budget cut are not even fed to the model)."""
    if tokens_used is None:
        tokens_used = [len(r) for r in responses]
    responses = [list(r)[:used] for r, used in zip(responses, tokens_used, strict=True)]
    n = len(prompts)
    width_p = max(len(p) for p in prompts)
    width_r = max(1, max((len(r) for r in responses), default=1))
    input_ids = torch.full((n, width_p + width_r), pad_id, dtype=torch.long)
    attention_mask = torch.zeros((n, width_p + width_r), dtype=torch.long)
    response_mask = torch.zeros((n, width_r), dtype=torch.bool)
    for i, (prompt, response) in enumerate(zip(prompts, responses, strict=True)):
        input_ids[i, width_p - len(prompt):width_p] = torch.tensor(list(prompt), dtype=torch.long)
        attention_mask[i, width_p - len(prompt):width_p] = 1
        if response:
            input_ids[i, width_p:width_p + len(response)] = torch.tensor(response, dtype=torch.long)
            attention_mask[i, width_p:width_p + len(response)] = 1
            response_mask[i, :len(response)] = True
    position_ids = (attention_mask.cumsum(-1) - 1).clamp_min(0)
    return TrainingBatch(input_ids, attention_mask, position_ids, input_ids[:, width_p:].clone(), response_mask,
                         response_mask.clone(), width_p)


def response_logprobs(model: Any, batch: TrainingBatch, temperature: float = 1.0, with_entropy: bool = True,
                      output_router_logits: bool = False) -> dict[str, Any]:
    """Forward the batch and return {'logprobs', 'entropy' ([N, R], zero outside response_mask), 'router_logits'}.

    The logit at column t predicts column t + 1, so response token j (column P + j) is scored by column P + j - 1.
    """
    kwargs = {"output_router_logits": True} if output_router_logits else {}
    out = model(input_ids=batch.input_ids, attention_mask=batch.attention_mask, position_ids=batch.position_ids,
                use_cache=False, **kwargs)
    start = batch.response_start
    width_r = batch.response_ids.shape[1]
    logits = out.logits[:, start - 1:start - 1 + width_r]
    logprobs, entropy = token_logprobs_and_entropy(logits, batch.response_ids, temperature, with_entropy)
    mask = batch.response_mask.to(logprobs.dtype)
    return {
        "logprobs": logprobs * mask,
        "entropy": entropy * mask if entropy is not None else None,
        "router_logits": getattr(out, "router_logits", None) if output_router_logits else None,
    }
