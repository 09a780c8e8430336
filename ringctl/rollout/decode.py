"""The HF rollout loop's decode fast path: a preallocated KV cache and, on CPU, a single-query attention.

A decode step of a small model on CPU costs its number of operator calls more than its FLOPs, so the loop
avoids the ones it can without touching the model:

- `preallocated_cache`: a `DynamicCache` whose full-attention layers write each step's keys/values into buffers
  sized for prompt + max_new_tokens and hand attention a view of the filled part, instead of `DynamicLayer`'s
  torch.cat of the whole cache every step. Dropping finished rows indexes the buffers as DynamicLayer indexes
  its tensors.
- `cpu_decode_attention`: for the duration of one generate call, a transformers model whose attention is `sdpa`
  runs its one-query decode steps through `single_query_attention` (registered in transformers'
  AttentionInterface; prompts still go through sdpa): the query heads of a key/value head become rows of one
  matmul against its keys (no repeat of the keys), a softmax and one matmul with the values. On CPU that is
  about a third faster than the flash kernel for one query, and the 4D boolean mask it takes is a view of the
  loop's preallocated mask (transformers passes a 4D mask through as is), so no mask is built per step. Same
  values as sdpa up to float rounding (tests/unit/rollout/test_hf_rollout.py).

Both apply only where they are exact and supported: full-attention layers only (sliding-window or linear
attention layers keep transformers' own cache and mask), models from transformers itself (remote code may not
read the attention registry), sdpa on CPU (on GPU the fused kernels win), transformers with per-layer caches.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Iterator
from typing import Any

import torch

DECODE_ATTENTION = "ringctl_single_query"


def preallocated_cache(config: Any, capacity: int):
    """A DynamicCache for `config` whose plain full-attention layers are `PreallocatedLayer`s of `capacity`
    positions; other layer kinds (sliding window, linear attention, ...) keep their class."""
    from transformers import DynamicCache

    cache = DynamicCache(config=config)
    classes = _layer_classes()
    if classes is not None and getattr(cache, "layers", None):
        dynamic, preallocated = classes
        cache.layers = [preallocated(capacity) if type(layer) is dynamic else layer for layer in cache.layers]
    return cache


def full_attention_only(config: Any) -> bool:
    """Every layer of the model is plain full attention (what a 4D decode mask of the loop's own may stand for)."""
    from transformers import DynamicCache

    classes = _layer_classes()
    layers = getattr(DynamicCache(config=config), "layers", None) if classes is not None else None
    return bool(layers) and all(type(layer) is classes[0] for layer in layers)


@functools.cache
def _layer_classes() -> tuple[type, type] | None:
    """(transformers' DynamicLayer, `PreallocatedLayer` over it), or None where transformers has no per-layer
    cache classes (then the plain DynamicCache is used)."""
    try:
        from transformers.cache_utils import DynamicLayer
    except ImportError:
        return None

    class PreallocatedLayer(DynamicLayer):
        """keys/values are views [B, H, :length] of buffers [B, H, capacity, D] that update() writes into."""

        def __init__(self, capacity: int) -> None:
            super().__init__()
            self.capacity = capacity
            self.length = 0

        def lazy_initialization(self, key_states: torch.Tensor, value_states: torch.Tensor) -> None:
            self.device = key_states.device
            self._keys = key_states.new_zeros((*key_states.shape[:2], self.capacity, key_states.shape[-1]))
            self._values = value_states.new_zeros((*value_states.shape[:2], self.capacity, value_states.shape[-1]))
            self.length = 0
            self.keys, self.values = self._keys[:, :, :0], self._values[:, :, :0]
            self.is_initialized = True

        def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args, **kwargs
                   ) -> tuple[torch.Tensor, torch.Tensor]:
            if not self.is_initialized:
                self.lazy_initialization(key_states, value_states)
            end = self.length + key_states.shape[-2]
            if end > self.capacity:
                raise RuntimeError(f"KV cache of {self.capacity} positions overflowed ({end})")
            self._keys[:, :, self.length:end] = key_states
            self._values[:, :, self.length:end] = value_states
            self.length = end
            self.keys, self.values = self._keys[:, :, :end], self._values[:, :, :end]
            return self.keys, self.values

        def get_seq_length(self) -> int:
            return self.length if self.is_initialized else 0

        def batch_select_indices(self, indices: torch.Tensor) -> None:
            if self.is_initialized:
                self._keys, self._values = self._keys[indices], self._values[indices]
                self.keys, self.values = self._keys[:, :, :self.length], self._values[:, :, :self.length]

        def reset(self) -> None:
            self.length = 0
            super().reset()

    return DynamicLayer, PreallocatedLayer


def single_query_attention(module: Any, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                           attention_mask: torch.Tensor | None, dropout: float = 0.0, scaling: float | None = None,
                           is_causal: bool | None = None, **kwargs) -> tuple[torch.Tensor, None]:
    """transformers' attention-function signature. One query position with a boolean (or no) mask and nothing
    exotic: query [B, H, 1, D] against key/value [B, KV, L, D], returned as [B, 1, H, D]; anything else (prompt
    forwards, training, position biases, sinks, soft-capping) goes to transformers' sdpa function unchanged."""
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    plain = not any(kwargs.get(name) is not None for name in ("position_bias", "s_aux", "sinks", "softcap"))
    if (query.shape[2] != 1 or module.training or dropout or not plain
            or (attention_mask is not None and attention_mask.dtype != torch.bool)):
        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout, scaling=scaling,
                                      is_causal=is_causal, **kwargs)
    batch, heads, _, dim = query.shape
    kv_heads = key.shape[1]
    # the query heads that share a key/value head become rows: [B, KV, H / KV, D] @ [B, KV, D, L]
    scores = torch.matmul(query.reshape(batch, kv_heads, heads // kv_heads, dim), key.transpose(-1, -2))
    scores = scores * (scaling if scaling is not None else dim ** -0.5)
    if attention_mask is not None:  # [B, 1, 1, L], True = attend
        scores = scores.masked_fill(~attention_mask, float("-inf"))
    weights = torch.softmax(scores, dim=-1, dtype=torch.float32).to(value.dtype)
    out = torch.matmul(weights, value)  # [B, KV, H / KV, D]
    return out.reshape(batch, 1, heads, dim), None


@functools.cache
def _register() -> bool:
    """Register `single_query_attention` (and sdpa's mask) under DECODE_ATTENTION; False where transformers has
    no attention registry."""
    try:
        from transformers.masking_utils import AttentionMaskInterface, sdpa_mask
        from transformers.modeling_utils import AttentionInterface
    except ImportError:
        return False
    AttentionInterface.register(DECODE_ATTENTION, single_query_attention)
    AttentionMaskInterface.register(DECODE_ATTENTION, sdpa_mask)
    return True


@contextlib.contextmanager
def cpu_decode_attention(model: Any) -> Iterator[bool]:
    """Within: the model's attention dispatches to `single_query_attention` and decode steps may pass the loop's
    4D boolean mask (yields True), or nothing changes (yields False: not a transformers model on CPU with sdpa
    and full attention only)."""
    config = getattr(model, "config", None)
    eligible = (config is not None and type(model).__module__.startswith("transformers.")
                and getattr(config, "_attn_implementation", None) == "sdpa"
                and not getattr(config, "sub_configs", None)  # one config: restoring "sdpa" restores all
                and next(model.parameters()).device.type == "cpu"
                and full_attention_only(config))
    if not eligible or not _register():
        yield False
        return
    config._attn_implementation = DECODE_ATTENTION
    try:
        yield True
    finally:
        config._attn_implementation = "sdpa"
