"""Training weights in checkpoint format, for engines that load Hugging Face checkpoints (vLLM).

transformers 5.x fuses some weights at load time (Qwen3-MoE: `mlp.experts.gate_up_proj` [E, 2I, H] instead of the
checkpoint's `mlp.experts.{e}.gate_proj.weight` / `up_proj.weight`). vLLM's `model.load_weights` expects the
checkpoint names, so the weights go through `transformers.core_model_loading.revert_weight_conversion`, the
same reversal `save_pretrained` applies (transformers 5.23, modeling_utils.save_pretrained).

`iter_checkpoint_weights` streams them block by block: one decoder layer (a child of an `nn.ModuleList`) or one
other module's own parameters at a time. The reversal's patterns are per key and a fused tensor and its
checkpoint pieces always live in one block, so reverting each block's sub-state-dict gives exactly the names,
shapes and values `save_pretrained` writes (tests/integration/test_zero3_weights.py checks it against the
safetensors file). Under DeepSpeed ZeRO-3 each block is gathered with
`deepspeed.zero.GatheredParameters(block_params, modifier_rank=None)` just before it is yielded and re-partitioned
right after, so at most one block is ever materialised, on any rank.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

import torch


def checkpoint_format_state_dict(model: Any) -> dict[str, torch.Tensor]:
    """The model's weights under the names and shapes `save_pretrained` would write (detached, same device).

    The whole model at once: for unpartitioned models only; prefer `iter_checkpoint_weights`."""
    state = {name: tensor.detach() for name, tensor in model.state_dict().items()}
    return _revert(model, state)


def _revert(model: Any, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    try:
        from transformers.core_model_loading import revert_weight_conversion
    except ImportError:  # transformers 4.x keeps checkpoint names in memory
        return state
    return dict(revert_weight_conversion(model, state))


def _persistent_buffers(module: torch.nn.Module, prefix: str) -> list[tuple[str, torch.Tensor]]:
    skip = getattr(module, "_non_persistent_buffers_set", set())
    return [(f"{prefix}{name}", buf) for name, buf in module._buffers.items() if buf is not None and name not in skip]


def weight_blocks(model: torch.nn.Module) -> Iterator[list[tuple[str, Any]]]:
    """The model's parameters and persistent buffers as (full name, tensor) groups, in module order: each child
    of an `nn.ModuleList` (a decoder layer) is one group with everything under it; any other module contributes
    its own (non-recursive) parameters and buffers as one group. A parameter shared by several modules (tied
    embeddings) appears once, under its first name, as in `named_parameters()` and `save_pretrained`."""
    seen: set[int] = set()

    def group(module: torch.nn.Module, prefix: str, recurse: bool) -> list[tuple[str, Any]]:
        modules = module.named_modules(prefix=prefix.rstrip(".")) if recurse else [(prefix.rstrip("."), module)]
        out = []
        for mod_name, mod in modules:
            mod_prefix = f"{mod_name}." if mod_name else ""
            for name, param in mod._parameters.items():
                if param is not None and id(param) not in seen:
                    seen.add(id(param))
                    out.append((f"{mod_prefix}{name}", param))
            out.extend(_persistent_buffers(mod, mod_prefix))
        return out

    def visit(module: torch.nn.Module, prefix: str) -> Iterator[list[tuple[str, Any]]]:
        if isinstance(module, torch.nn.ModuleList):
            for name, child in module.named_children():
                block = group(child, f"{prefix}{name}.", recurse=True)
                if block:
                    yield block
            return
        own = group(module, prefix, recurse=False)
        if own:
            yield own
        for name, child in module.named_children():
            yield from visit(child, f"{prefix}{name}.")

    yield from visit(model, "")


def iter_checkpoint_weights(model: torch.nn.Module, *, to_rank: int | None = None
                            ) -> Iterator[tuple[str, torch.Tensor]]:
    """(name, tensor) pairs in checkpoint format (the keys, shapes and values `save_pretrained` writes), one
    block at a time, for an ordinary module or a DeepSpeed ZeRO-3 partitioned one.

    Under ZeRO-3 this is collective: every rank must iterate it to the end (each block's gather is an
    all-gather), including ranks that receive nothing. Never break out of the loop early on one rank only.
    to_rank: None (default) = every rank receives every pair (one colocated vLLM engine per rank, the set-up of
    `VLLMRolloutEngine` under torchrun: each rank loads the full tensors into its own engine, and vLLM's tensor-
    parallel weight loaders take their slice); an int = only that rank receives (one rollout server fed by
    rank 0); the others just take part in the gathers.
    The tensors are valid until the generator is resumed (the block is re-partitioned then): consumers copy
    them (vLLM's `load_weights` copies into its own parameters) or `.clone()` what they keep.
    """
    import torch.distributed as dist

    rank = dist.get_rank() if dist.is_available() and dist.is_initialized() else 0
    receives = to_rank is None or to_rank == rank
    partitioned = any(hasattr(p, "ds_id") for p in model.parameters())
    for block in weight_blocks(model):
        params = [t for _, t in block if hasattr(t, "ds_id")]
        if partitioned and params:
            import deepspeed

            with deepspeed.zero.GatheredParameters(params, modifier_rank=None):
                if receives:
                    yield from _revert(model, {name: t.detach() for name, t in block}).items()
        elif receives:
            yield from _revert(model, {name: t.detach() for name, t in block}).items()


def iter_named_weights(source: Any | Mapping[str, torch.Tensor]) -> Iterator[tuple[str, torch.Tensor]]:
    """(name, tensor) pairs in checkpoint format from an nn.Module (streamed block by block, ZeRO-3 gathered:
    see `iter_checkpoint_weights`) or an already converted state dict."""
    if hasattr(source, "named_parameters"):
        yield from iter_checkpoint_weights(source)
    else:
        yield from source.items()
