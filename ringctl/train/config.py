"""Recipe sections owned by the training core: `model`, `backends` and the fields every training stage shares
(pydantic only, no torch import)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from ringctl.recipe.base import StageConfig, Strict
from ringctl.train.numerics import OnNonFinite


class TinyModelConfig(Strict):
    """The tiny default: a Qwen3-MoE-family model built from this config (random init, seeded)."""

    hidden_size: int = 128
    num_hidden_layers: int = 4
    num_attention_heads: int = 4
    num_key_value_heads: int = 2
    moe_intermediate_size: int = 128
    intermediate_size: int = 256
    num_experts: int = 8
    num_experts_per_tok: int = 2
    max_position_embeddings: int = 2048


class ModelConfig(Strict):
    name_or_path: str = Field("tiny", description="'tiny' (built locally), a local path or a hub id")
    trust_remote_code: bool = False
    dtype: Literal["float32", "bfloat16", "float16", "auto"] = "float32"
    attn_implementation: Literal["eager", "sdpa", "flash_attention_2"] | None = None
    experts_implementation: Literal["auto", "eager", "grouped_mm", "batched_mm"] = Field(
        "auto", description="how transformers runs the MoE experts (models whose experts support the choice, e.g. "
        "Qwen3-MoE): auto = eager where CUDA is absent (measured 1.4x faster per training step than grouped_mm on "
        "CPU for the tiny model), transformers' default (grouped_mm) on GPUs")
    tiny: TinyModelConfig = Field(default_factory=TinyModelConfig)


class DeepSpeedConfig(Strict):
    zero_stage: Literal[0, 1, 2, 3] = 2
    offload_optimizer: bool = False
    offload_params: bool = False
    bf16: bool = False


class VllmConfig(Strict):
    gpu_memory_utilization: float = Field(0.5, gt=0, le=1, description="the device's share vLLM may take (weights + "
                                          "KV cache); it starts only if that much is free")
    tensor_parallel_size: int = Field(1, ge=1, description="ranks per engine (torchrun: consecutive ranks)")
    enable_sleep_mode: bool = Field(True, description="CUDA: the engine sleeps between rollouts (no-op on CPU)")
    sleep_level: Literal[1, 2] = Field(1, description="1: weights offloaded to host memory while asleep; 2: dropped "
                                       "(the RL loop pushes them every step anyway)")
    kv_cache_memory_bytes: int | None = Field(None, ge=1 << 20, description="KV cache size per engine; default: "
                                              "what gpu_memory_utilization leaves on GPU, 512 MiB on CPU")


class BackendsConfig(Strict):
    train: Literal["torch", "deepspeed"] = "torch"
    deepspeed: DeepSpeedConfig = Field(default_factory=DeepSpeedConfig)
    rollout: Literal["hf", "vllm"] = "hf"
    vllm: VllmConfig = Field(default_factory=VllmConfig)
    activation_checkpointing: bool = Field(
        False, description="the default of every training stage's `activation_checkpointing` (recompute each decoder "
        "layer in the backward instead of keeping its activations: memory per token per layer drops to the layer's "
        "input, for about one more forward of compute)")


class TrainingStageConfig(StageConfig):
    """Fields every stage that trains a model with an optimizer has (sft, rl, reward_model)."""

    activation_checkpointing: bool | None = Field(
        None, description="recompute each decoder layer's activations in the backward (transformers' gradient "
        "checkpointing, non-reentrant; the same gradients); none: backends.activation_checkpointing")
    logprob_chunk_tokens: int | None = Field(
        None, ge=0, description="tokens per chunk of the output head in training (bounds the [tokens, vocab] logits "
        "held at once; SFT's loss, RL's log-probs); none: sized so one float32 [chunk, vocab] block holds 2^26 "
        "values; 0: the full-vocab path")

    def checkpointing(self, recipe) -> bool:
        """Whether this stage trains with activation checkpointing (its own setting, else the recipe's default)."""
        if self.activation_checkpointing is not None:
            return self.activation_checkpointing
        return bool(recipe.backends.activation_checkpointing)

    on_nonfinite: OnNonFinite = Field(
        "stop", description="a non-finite loss or gradient norm: stop (fail naming the step and the value before the "
        "update; the last checkpoint stays the last good state, `ringctl resume` continues) or skip_step (withhold "
        "that update, keep going, count it in train/skipped_steps; the step still advances the schedule)")
