"""Per-token log-probs and entropy of response tokens from a causal LM, and the padded training batch.

The training forward must score exactly what the sampler scored: log_softmax(logits / temperature) of the
sampled token (the rollout engines return the same quantity as old log-probs, see ringctl/rollout/base.py).
"""

from __future__ import annotations

import contextlib
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
                      output_router_logits: bool = False, share_prompts: bool = False) -> dict[str, Any]:
    """Forward the batch and return {'logprobs', 'entropy' ([N, R], zero outside response_mask), 'router_logits',
    'router_token_mask'} (the router rows' non-padding mask, flat, for the MoE losses).

    The logit at column t predicts column t + 1, so response token j (column P + j) is scored by column P + j - 1.
    share_prompts: rows with the same prompt (the K samples of a group) run the prompt once: see
    `_shared_prompt_logits`. Same log-probs and gradients up to float rounding, (K-1)/K of the prompt tokens saved.
    """
    kwargs = {"output_router_logits": True} if output_router_logits else {}
    shared = _shared_prompt_logits(model, batch, output_router_logits) if share_prompts else None
    if shared is not None:
        logits, router_logits, router_mask = shared
    else:
        out = model(input_ids=batch.input_ids, attention_mask=batch.attention_mask, position_ids=batch.position_ids,
                    use_cache=False, **kwargs)
        start = batch.response_start
        logits = out.logits[:, start - 1:start - 1 + batch.response_ids.shape[1]]
        router_logits = getattr(out, "router_logits", None) if output_router_logits else None
        router_mask = batch.attention_mask.reshape(-1)
    logprobs, entropy = token_logprobs_and_entropy(logits, batch.response_ids, temperature, with_entropy)
    mask = batch.response_mask.to(logprobs.dtype)
    return {
        "logprobs": logprobs * mask,
        "entropy": entropy * mask if entropy is not None else None,
        "router_logits": router_logits,
        "router_token_mask": router_mask if router_logits is not None else None,
    }


def _router_recorder(model: Any) -> tuple[type, int] | None:
    """(router module class, index of the router logits in its output) as transformers records `router_logits`
    for this model (`_can_record_outputs`), or None (e.g. remote-code models)."""
    spec = (getattr(getattr(model, "module", model), "_can_record_outputs", None) or {}).get("router_logits")
    target = getattr(spec, "target_class", None)
    return (target, int(getattr(spec, "index", 0) or 0)) if isinstance(target, type) else None


@contextlib.contextmanager
def _recording_router_logits(model: Any, target: type, index: int):
    """Collect every router module's logits, in call order, through forward hooks (the model's own
    output_router_logits would also compute its aux loss against an attention mask that covers the cache)."""
    calls: list[torch.Tensor] = []

    def hook(module, inputs, output):
        calls.append(output[index] if isinstance(output, (tuple, list)) else output)

    handles = [m.register_forward_hook(hook) for m in getattr(model, "module", model).modules()
               if isinstance(m, target)]
    try:
        yield calls
    finally:
        for h in handles:
            h.remove()


def _shared_prompt_logits(model: Any, batch: TrainingBatch, output_router_logits: bool) -> tuple | None:
    """Logits [N, R, V] predicting the response tokens, with each distinct prompt forwarded once.

    1. the U distinct prompts (left-padded, P columns) go through the model with a KV cache (with grad: the
       responses' loss reaches the prompt tokens' keys and values, so the gradient is the one of the full rows);
    2. the cache rows are copied to the N responses of their prompt (DynamicCache.batch_select_indices);
    3. the responses (R columns) go through the model on top of it, attention mask [N, P + R], positions
       continuing from the prompt. Response token 0 is predicted by the prompt's last logit, token j by the
       response forward's column j - 1.
    Router logits come back as prompt rows then response rows per layer, with their flat non-padding mask: a
    shared prompt's tokens count once in the MoE load-balance / z-loss instead of K times.
    Returns None when no two rows share a prompt (then the plain forward is as cheap), or when router logits are
    asked for and the model does not say which module produces them.
    """
    from transformers import DynamicCache

    start = batch.response_start
    prompt_ids, prompt_mask = batch.input_ids[:, :start], batch.attention_mask[:, :start]
    distinct, inverse = torch.unique(torch.cat([prompt_ids, prompt_mask], dim=1), dim=0, return_inverse=True)
    n = batch.input_ids.shape[0]
    recorder = _router_recorder(model) if output_router_logits else None
    if len(distinct) == n or (output_router_logits and recorder is None):
        return None
    first = torch.full((len(distinct),), n, dtype=torch.long, device=inverse.device)
    first = first.scatter_reduce(0, inverse, torch.arange(n, device=inverse.device), reduce="amin")
    # the prompt pass goes through the bare module: a DDP wrapper allows one forward per backward, and its
    # gradient hooks sit on the parameters, so the prompt's share of the gradient is still reduced across ranks
    inner = getattr(model, "module", model)
    cache = DynamicCache(config=inner.config)
    recording = _recording_router_logits(model, *recorder) if recorder else contextlib.nullcontext([])
    with recording as calls:
        out_p = inner(input_ids=prompt_ids[first], attention_mask=prompt_mask[first],
                      position_ids=batch.position_ids[first, :start], past_key_values=cache, use_cache=True,
                      logits_to_keep=1)
        n_layers = len(calls)
        cache.batch_select_indices(inverse)
        out_r = model(input_ids=batch.input_ids[:, start:], attention_mask=batch.attention_mask,
                      position_ids=batch.position_ids[:, start:], past_key_values=cache, use_cache=True)
    logits = torch.cat([out_p.logits[inverse, -1:], out_r.logits[:, :-1]], dim=1)
    router_logits = router_mask = None
    if recorder:
        router_logits = tuple(torch.cat([a.reshape(-1, a.shape[-1]), b.reshape(-1, b.shape[-1])])
                              for a, b in zip(calls[:n_layers], calls[n_layers:], strict=True))
        router_mask = torch.cat([prompt_mask[first].reshape(-1), batch.attention_mask[:, start:].reshape(-1)])
    return logits, router_logits, router_mask
