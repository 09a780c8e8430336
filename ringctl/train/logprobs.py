"""Per-token log-probs and entropy of response tokens from a causal LM, and the padded training batch.

The training forward must score exactly what the sampler scored: log_softmax(logits / temperature) of the
sampled token (the rollout engines return the same quantity as old log-probs, see ringctl/rollout/base.py).
"""

from __future__ import annotations

import contextlib
import weakref
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


DEFAULT_CHUNK_ELEMENTS = 1 << 26
"""Default chunk size in logits: 64M float32 values (256 MiB) per [chunk, V] tensor, e.g. 530 tokens at a
vocabulary of 126,464 or 2,048 at 32,768. A chunk's forward holds a few such tensors, its backward the same."""


def _chunk_size(inner: Any, head: Any, chunk_tokens: int | None) -> int:
    if chunk_tokens is None:
        vocab = getattr(head, "out_features", None) or inner.config.vocab_size
        return max(1, DEFAULT_CHUNK_ELEMENTS // int(vocab))
    return max(1, int(chunk_tokens))


def head_chunks(model: Any, response_tokens: int, chunk_tokens: int | None = None) -> int:
    """How many times `response_logprobs` calls the output head for a batch with this many response tokens."""
    inner = getattr(model, "module", model)
    head = inner.get_output_embeddings() if hasattr(inner, "get_output_embeddings") else None
    return -(-int(response_tokens) // _chunk_size(inner, head, chunk_tokens))


_WARNED_FULL_VOCAB: set[str] = set()


def _warn_full_vocab(model: Any) -> None:
    """Once per model class: its training losses go through the full [tokens, V] logits (memory grows with them)."""
    name = type(model).__name__
    if name not in _WARNED_FULL_VOCAB:
        _WARNED_FULL_VOCAB.add(name)
        import warnings

        warnings.warn(f"{name}: the chunked output head is not supported for this model (its forward changes the "
                      f"head's logits or reads the head's weight directly), so training losses (SFT, RL log-probs) "
                      f"use the full [tokens, vocab] logits; keep micro-batches small (max_tokens_per_micro_batch, "
                      f"SFT's max_seq_len)",
                      stacklevel=3)


def response_logprobs(model: Any, batch: TrainingBatch, temperature: float = 1.0, with_entropy: bool = True,
                      output_router_logits: bool = False, share_prompts: bool = False,
                      chunk_tokens: int | None = None, entropy_grad: bool = True,
                      min_chunks: int = 0) -> dict[str, Any]:
    """Forward the batch and return {'logprobs', 'entropy' ([N, R], zero outside response_mask), 'router_logits',
    'router_token_mask'} (the router rows' non-padding mask, flat, for the MoE losses).

    The logit at column t predicts column t + 1, so response token j (column P + j) is scored by column P + j - 1.
    share_prompts: rows with the same prompt (the K samples of a group) run the prompt once: see
    `_shared_prompt_logits`. Same log-probs and gradients up to float rounding, (K-1)/K of the prompt tokens saved.

    Memory is bounded: no [N, R, V] tensor. The output head is swapped, for this forward only, for
    `_ChunkedLogprobHead`, which scores the real response tokens `chunk_tokens` at a time (default: so that one
    [chunk, V] float32 tensor holds DEFAULT_CHUNK_ELEMENTS values), each chunk under activation checkpointing, and
    keeps only the sampled token's log-prob and the entropy. chunk_tokens=0 is the full-vocab reference path
    (logits [N, R, V]); models whose forward post-processes the head's output fall back to it (see
    `_chunked_head_supported`). entropy_grad=False computes the entropy without a graph (for logging only, when
    the loss's entropy coefficient is 0); with_entropy=False does not compute it at all.
    min_chunks: call the head at least this many times (empty chunks after the real ones). Under ZeRO-3 every
    module call gathers parameters and the ranks must make the same calls: give every rank the largest chunk
    count of the micro-batch over the ranks (`head_chunks`).
    """
    inner = getattr(model, "module", model)
    head_name = _chunkable_head(inner, chunk_tokens)
    if head_name is None:
        return _full_vocab_logprobs(model, batch, temperature, with_entropy, output_router_logits, share_prompts)
    head = getattr(inner, head_name)
    chunk_tokens = _chunk_size(inner, head, chunk_tokens)
    chunked = _ChunkedLogprobHead(head, batch.response_ids, temperature, with_entropy, entropy_grad, chunk_tokens,
                                  min_chunks)
    setattr(inner, head_name, chunked)
    try:
        shared = _shared_prompt_logits(model, batch, output_router_logits, chunked) if share_prompts else None
        if shared is not None:
            (first_column, rest), router_logits, router_mask = shared
            scores = torch.cat([first_column, rest], dim=1)
        else:
            chunked.select = _select_full_rows(batch)
            out = model(input_ids=batch.input_ids, attention_mask=batch.attention_mask,
                        position_ids=batch.position_ids, use_cache=False,
                        **({"output_router_logits": True} if output_router_logits else {}))
            scores = _scatter_rows(out.logits, batch.response_mask)
            router_logits = getattr(out, "router_logits", None) if output_router_logits else None
            router_mask = batch.attention_mask.reshape(-1)
    finally:
        setattr(inner, head_name, head)
    return {
        "logprobs": scores[..., 0],
        "entropy": scores[..., 1] if with_entropy else None,
        "router_logits": router_logits,
        "router_token_mask": router_mask if router_logits is not None else None,
    }


def token_loss_sum(model: Any, input_ids: torch.Tensor, position_ids: torch.Tensor, targets: torch.Tensor,
                   ignore_index: int = -100, chunk_tokens: int | None = None,
                   min_chunks: int = 0) -> tuple[torch.Tensor, int]:
    """SFT's loss: (sum over the tokens with a target of -log p(target), their count), targets [rows, L] aligned
    with input_ids (targets[:, t] is predicted by column t; ignore_index elsewhere). No attention mask: packed rows
    are told apart by their position ids.

    The same bounded-memory head as `response_logprobs`: only the [chunk, V] logits of `chunk_tokens` target
    tokens at a time, each chunk checkpointed, never a [tokens, V] tensor; chunk_tokens=0 (or a model whose
    forward post-processes its head's logits) is the full-vocab reference path. min_chunks: as in
    `response_logprobs` (ZeRO-3 lockstep: the largest `head_chunks` of the micro-batch over the ranks)."""
    inner = getattr(model, "module", model)
    mask = targets != ignore_index
    count = int(mask.sum())
    head_name = _chunkable_head(inner, chunk_tokens)
    if head_name is None:
        logits = model(input_ids=input_ids, position_ids=position_ids, use_cache=False).logits
        loss = torch.nn.functional.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), targets.reshape(-1),
                                                 ignore_index=ignore_index, reduction="sum")
        return loss, count
    head = getattr(inner, head_name)
    chunked = _ChunkedLogprobHead(head, targets, 1.0, False, False, _chunk_size(inner, head, chunk_tokens),
                                  min_chunks)
    chunked.select = lambda hidden: (hidden[mask], targets[mask])
    setattr(inner, head_name, chunked)
    try:
        scores = model(input_ids=input_ids, position_ids=position_ids, use_cache=False).logits
    finally:
        setattr(inner, head_name, head)
    return -scores[:, 0].sum(), count


def _chunkable_head(inner: Any, chunk_tokens: int | None) -> str | None:
    """The attribute name of the output head to swap for `_ChunkedLogprobHead`, or None for the full-vocab path:
    asked for (chunk_tokens 0), or the model's head cannot be swapped exactly (warned once per model class)."""
    if chunk_tokens == 0:
        return None
    head_name = _head_attribute(inner)
    if head_name is not None and _chunked_head_supported(inner, head_name):
        return head_name
    _warn_full_vocab(inner)
    return None


def _full_vocab_logprobs(model: Any, batch: TrainingBatch, temperature: float, with_entropy: bool,
                         output_router_logits: bool, share_prompts: bool) -> dict[str, Any]:
    """The reference path: logits [N, R, V], log_softmax over the whole vocabulary (unbounded memory)."""
    kwargs = {"output_router_logits": True} if output_router_logits else {}
    shared = _shared_prompt_logits(model, batch, output_router_logits) if share_prompts else None
    if shared is not None:
        (first_column, rest), router_logits, router_mask = shared
        logits = torch.cat([first_column, rest], dim=1)
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


# ----------------------------------------------------------------------------------------------------------------
# bounded memory: the output head scores only the response tokens, a chunk at a time
# ----------------------------------------------------------------------------------------------------------------

class _ChunkedLogprobHead(torch.nn.Module):
    """Stands in for the model's output head during one training forward.

    It receives the final hidden states [rows, L, H], keeps the positions that predict a real response token
    (`select`, set per forward: it returns the flat [M, H] states and the [M] targets), and returns [M, 2]
    (log p(target), entropy; entropy 0 when not asked for) instead of logits [rows, L, V]. The head is called inside
    the model's (and so the DDP / DeepSpeed wrapper's) forward, so DDP sees the head's parameters in the output's
    graph and ZeRO-3's module hooks gather its weight as they would for the logits. Each chunk runs under
    non-reentrant activation checkpointing: its [chunk, V] tensors are dropped after the forward and recomputed
    one chunk at a time in the backward. The original head is held unregistered, so that the module tree (and the
    parameter names) stay as they are.
    """

    def __init__(self, head: torch.nn.Module, targets: torch.Tensor, temperature: float, with_entropy: bool,
                 entropy_grad: bool, chunk_tokens: int, min_chunks: int = 0):
        super().__init__()
        object.__setattr__(self, "head", head)
        self.targets, self.temperature, self.chunk_tokens = targets, temperature, max(1, int(chunk_tokens))
        self.min_chunks = min_chunks
        self.with_entropy, self.entropy_grad = with_entropy, entropy_grad
        self.select = None

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        flat, targets = self.select(hidden)
        checkpointed = torch.is_grad_enabled() and (flat.requires_grad or any(
            p.requires_grad for p in self.head.parameters()))
        pieces = []
        chunks = list(zip(flat.split(self.chunk_tokens), targets.split(self.chunk_tokens), strict=True))
        chunks += [(flat[:0], targets[:0])] * max(0, self.min_chunks - len(chunks))  # lockstep calls (ZeRO-3)
        # split (not slicing): one backward node gathers the chunks' [c, H] gradients, no [M, H] per chunk
        for hidden_chunk, target_chunk in chunks:
            if checkpointed:
                piece = torch.utils.checkpoint.checkpoint(self._score, hidden_chunk, target_chunk,
                                                          use_reentrant=False)
            else:
                piece = self._score(hidden_chunk, target_chunk)
            pieces.append(piece)
        if not pieces:
            return flat.new_zeros((0, 2), dtype=torch.float32)
        return torch.cat(pieces) if len(pieces) > 1 else pieces[0]

    def _score(self, hidden: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        logits = self.head(hidden)
        if not self.with_entropy:
            picked, _ = token_logprobs_and_entropy(logits, targets, self.temperature, with_entropy=False)
            return torch.stack([picked, torch.zeros_like(picked)], dim=-1)
        if self.entropy_grad:
            picked, entropy = token_logprobs_and_entropy(logits, targets, self.temperature)
            return torch.stack([picked, entropy], dim=-1)
        picked, _ = token_logprobs_and_entropy(logits, targets, self.temperature, with_entropy=False)
        with torch.no_grad():
            _, entropy = token_logprobs_and_entropy(logits.detach(), targets, self.temperature)
        return torch.stack([picked, entropy], dim=-1)


def _select_full_rows(batch: TrainingBatch):
    """Prompt + response rows: column P + j - 1 predicts response token j."""
    start, width = batch.response_start, batch.response_ids.shape[1]

    def select(hidden: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mask = batch.response_mask
        return hidden[:, start - 1:start - 1 + width][mask], batch.response_ids[mask]

    return select


def _scatter_rows(scores: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """[M, 2] scores of the True cells of mask [N, W] -> [N, W, 2], zeros elsewhere."""
    full = scores.new_zeros((*mask.shape, scores.shape[-1]))
    return full.masked_scatter(mask.unsqueeze(-1).expand_as(full), scores)


def _head_attribute(inner: Any) -> str | None:
    """Name of the output head among the model's direct children, or None (no get_output_embeddings, or nested)."""
    get = getattr(inner, "get_output_embeddings", None)
    head = get() if callable(get) else None
    if not isinstance(head, torch.nn.Module):
        return None
    return next((name for name, child in inner.named_children() if child is head), None)


_LOGIT_POSTPROCESSING = ("final_logit_softcapping", "logit_softcapping", "logit_scale", "logits_scaling",
                         "output_multiplier_scale", "mup_width_multiplier")
_SUPPORTED: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # model -> bool


def _chunked_head_supported(inner: Any, head_name: str) -> bool:
    """Whether the model's forward returns its head's output untouched, so that scoring the head's input ourselves
    is exact. A config that asks for logit post-processing (Gemma 2/3 soft-capping, Cohere / Granite scaling, ...)
    is refused; otherwise one probe forward of two tokens (once per model) checks that the
    returned logits are exactly the head's output. Refused models take the full-vocab path."""
    config = getattr(inner, "config", None)
    for name in _LOGIT_POSTPROCESSING:
        value = getattr(config, name, None)
        if value is not None and not (isinstance(value, (int, float)) and name.endswith("scale") and value == 1):
            return False
    if inner not in _SUPPORTED:
        _SUPPORTED[inner] = _probe_head_output(inner, head_name)
    return _SUPPORTED[inner]


class _RecordingHead(torch.nn.Module):
    def __init__(self, head: torch.nn.Module):
        super().__init__()
        object.__setattr__(self, "head", head)
        self.outputs: list[torch.Tensor] = []

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        self.outputs.append(self.head(hidden))
        return self.outputs[-1]


def _probe_head_output(inner: Any, head_name: str) -> bool:
    head = getattr(inner, head_name)
    recording = _RecordingHead(head)
    setattr(inner, head_name, recording)
    try:
        device = next((p.device for p in inner.parameters()), torch.device("cpu"))
        ids = torch.tensor([[1, 2]], device=device)
        with torch.no_grad():
            logits = inner(input_ids=ids, attention_mask=torch.ones_like(ids), use_cache=False).logits
        return (len(recording.outputs) == 1 and logits.shape == recording.outputs[0].shape
                and bool(torch.equal(logits, recording.outputs[0])))
    except Exception:  # e.g. a forward that reads the head's weight directly: not swappable
        return False
    finally:
        setattr(inner, head_name, head)


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


def _shared_prompt_logits(model: Any, batch: TrainingBatch, output_router_logits: bool,
                          chunked: _ChunkedLogprobHead | None = None) -> tuple | None:
    """Logits predicting the response tokens, with each distinct prompt forwarded once, as (column 0 [N, 1, V],
    columns 1.. [N, R - 1, V]); with `chunked` (the model's head swapped for it) the [.., 2] scores instead.

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
    if chunked is not None:
        chunked.select = _select_prompt_last(batch, inverse)
    with recording as calls:
        out_p = inner(input_ids=prompt_ids[first], attention_mask=prompt_mask[first],
                      position_ids=batch.position_ids[first, :start], past_key_values=cache, use_cache=True,
                      logits_to_keep=1)
        n_layers = len(calls)
        cache.batch_select_indices(inverse)
        if chunked is not None:
            chunked.select = _select_response_columns(batch)
        out_r = model(input_ids=batch.input_ids[:, start:], attention_mask=batch.attention_mask,
                      position_ids=batch.position_ids[:, start:], past_key_values=cache, use_cache=True)
    if chunked is not None:
        mask = batch.response_mask
        columns = (_scatter_rows(out_p.logits, mask[:, :1]), _scatter_rows(out_r.logits, mask[:, 1:]))
    else:
        columns = (out_p.logits[inverse, -1:], out_r.logits[:, :-1])
    router_logits = router_mask = None
    if recorder:
        router_logits = tuple(torch.cat([a.reshape(-1, a.shape[-1]), b.reshape(-1, b.shape[-1])])
                              for a, b in zip(calls[:n_layers], calls[n_layers:], strict=True))
        router_mask = torch.cat([prompt_mask[first].reshape(-1), batch.attention_mask[:, start:].reshape(-1)])
    return columns, router_logits, router_mask


def _select_prompt_last(batch: TrainingBatch, inverse: torch.Tensor):
    """Shared prompts [U, 1, H] (logits_to_keep=1): the last prompt column predicts each row's response token 0."""
    def select(hidden: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mask = batch.response_mask[:, 0]
        return hidden[inverse, -1][mask], batch.response_ids[:, 0][mask]

    return select


def _select_response_columns(batch: TrainingBatch):
    """Response columns [N, R, H] on the prompt cache: column j - 1 predicts response token j."""
    def select(hidden: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mask = batch.response_mask[:, 1:]
        return hidden[:, :-1][mask], batch.response_ids[:, 1:][mask]

    return select
