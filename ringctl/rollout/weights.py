"""Training weights in checkpoint format, for engines that load Hugging Face checkpoints (vLLM).

transformers 5.x fuses some weights at load time (Qwen3-MoE: `mlp.experts.gate_up_proj` [E, 2I, H] instead of the
checkpoint's `mlp.experts.{e}.gate_proj.weight` / `up_proj.weight`). vLLM's `model.load_weights` expects the
checkpoint names, so the state dict goes through `transformers.core_model_loading.revert_weight_conversion`, the
same reversal `save_pretrained` applies (transformers 5.23, modeling_utils.save_pretrained).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

import torch


def checkpoint_format_state_dict(model: Any) -> dict[str, torch.Tensor]:
    """The model's weights under the names and shapes `save_pretrained` would write (detached, same device)."""
    state = {name: tensor.detach() for name, tensor in model.state_dict().items()}
    try:
        from transformers.core_model_loading import revert_weight_conversion
    except ImportError:  # transformers 4.x keeps checkpoint names in memory
        return state
    return dict(revert_weight_conversion(model, state))


def iter_named_weights(source: Any | Mapping[str, torch.Tensor]) -> Iterator[tuple[str, torch.Tensor]]:
    """(name, tensor) pairs in checkpoint format from an nn.Module or an already converted state dict."""
    state = checkpoint_format_state_dict(source) if hasattr(source, "state_dict") else source
    yield from state.items()
