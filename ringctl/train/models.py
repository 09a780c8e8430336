"""Models and tokenizers: any Hugging Face causal LM (local path or hub id), and the tiny CPU default.

The tiny default is a Qwen3-MoE-family model built from a config (seeded random init, ~1-5M parameters) with a
character-level tokenizer built locally with `tokenizers`, both saved in Hugging Face format, so every later
stage (and vLLM) loads them with `from_pretrained` like any other checkpoint.
"""

from __future__ import annotations

import string
from pathlib import Path
from typing import Any

# transformers reads the active DeepSpeed config through a weak reference (integrations/deepspeed.py,
# set_hf_deepspeed_config): the HfDeepSpeedConfig object must stay alive while ZeRO-3 models are built and used.
_ACTIVE_ZERO3_CONFIG: Any = None

PAD, BOS, EOS, IM_START, IM_END = "<|pad|>", "<|bos|>", "<|endoftext|>", "<|im_start|>", "<|im_end|>"
SPECIAL_TOKENS = [PAD, BOS, EOS, IM_START, IM_END]
CHARS = sorted(set(string.printable) - set("\x0b\x0c\r"))  # printable ASCII, space, tab, newline
UNK = "<|unk|>"

CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "<|im_start|>{{ message['role'] }}\n{{ message['content'] }}<|im_end|>\n"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)

DTYPES = {"float32": "float32", "bfloat16": "bfloat16", "float16": "float16", "auto": "auto"}


def build_char_tokenizer():
    """Character-level tokenizer (BPE with no merges = one token per character) + chat special tokens."""
    from tokenizers import Tokenizer, decoders, models
    from transformers import PreTrainedTokenizerFast

    vocab = {tok: i for i, tok in enumerate(SPECIAL_TOKENS + [UNK] + CHARS)}
    core = Tokenizer(models.BPE(vocab=vocab, merges=[], unk_token=UNK))
    core.decoder = decoders.Fuse()
    core.add_special_tokens(SPECIAL_TOKENS)
    tok = PreTrainedTokenizerFast(tokenizer_object=core, pad_token=PAD, bos_token=BOS, eos_token=IM_END,
                                  unk_token=UNK, additional_special_tokens=[EOS, IM_START])
    tok.chat_template = CHAT_TEMPLATE
    tok.padding_side = "right"
    return tok


def tiny_model_config(tiny, vocab_size: int | None = None):
    """transformers Qwen3MoeConfig for the recipe's `model.tiny` section."""
    from transformers import Qwen3MoeConfig

    vocab_size = vocab_size or len(SPECIAL_TOKENS) + 1 + len(CHARS)
    return Qwen3MoeConfig(
        vocab_size=vocab_size, hidden_size=tiny.hidden_size, intermediate_size=tiny.intermediate_size,
        moe_intermediate_size=tiny.moe_intermediate_size, num_hidden_layers=tiny.num_hidden_layers,
        num_attention_heads=tiny.num_attention_heads, num_key_value_heads=tiny.num_key_value_heads,
        head_dim=tiny.hidden_size // tiny.num_attention_heads, num_experts=tiny.num_experts,
        num_experts_per_tok=tiny.num_experts_per_tok, max_position_embeddings=tiny.max_position_embeddings,
        decoder_sparse_step=1, mlp_only_layers=[], norm_topk_prob=True, tie_word_embeddings=True,
        pad_token_id=0, bos_token_id=1, eos_token_id=4, rope_theta=10000.0,
    )


def build_tiny(model_cfg, seed: int = 0):
    """The tiny default model (seeded random init) and its tokenizer."""
    import torch
    from transformers import AutoModelForCausalLM

    tok = build_char_tokenizer()
    config = tiny_model_config(model_cfg.tiny, len(tok))
    config.eos_token_id = tok.eos_token_id
    config.pad_token_id = tok.pad_token_id
    config.bos_token_id = tok.bos_token_id
    state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    try:
        model = AutoModelForCausalLM.from_config(config, attn_implementation=model_cfg.attn_implementation or "sdpa",
                                                 dtype=torch.float32)
    finally:
        torch.random.set_rng_state(state)
    model.generation_config.eos_token_id = tok.eos_token_id
    model.generation_config.pad_token_id = tok.pad_token_id
    apply_experts_implementation(model, getattr(model_cfg, "experts_implementation", "auto"))
    return model, tok


def apply_experts_implementation(model, requested: str = "auto") -> str | None:
    """Set how the model's MoE experts run (transformers >= 5 models whose experts dispatch through its
    ExpertsInterface; others are left alone). `auto`: the per-expert loop ("eager") without CUDA, where grouped_mm's
    token permutation costs more than it saves (the tiny model's forward+backward: 0.29 s eager vs 0.41 s grouped_mm
    on one CPU thread), transformers' own default on GPUs. Returns what was set, or None."""
    import torch

    setter = getattr(model, "set_experts_implementation", None)
    if setter is None or not getattr(type(model), "_can_set_experts_implementation", lambda: False)():
        return None
    choice = ("eager" if not torch.cuda.is_available() else None) if requested == "auto" else requested
    if choice is not None:
        try:
            setter(choice)
        except (ValueError, KeyError, ImportError) as e:  # e.g. an implementation this transformers lacks
            raise ValueError(f"model.experts_implementation={requested!r}: {e}") from None
    return choice


def build_tiny_zero3(model_cfg, seed: int = 0):
    """The tiny default built partitioned (call `activate_zero3` first; collective over the ranks).

    `from_config` constructs it under zero.Init; transformers' ZeRO-3 weight init would draw the random weights
    in another order than `build_tiny`, so rank 0 builds the seeded model unpartitioned (it is tiny by
    definition) and copies it in module by module: the same seed gives the same weights on every backend and
    world size.
    """
    import deepspeed
    import torch
    import torch.distributed as dist

    model, tok = build_tiny(model_cfg, seed)  # under zero.Init: partitioned
    rank = dist.get_rank() if dist.is_initialized() else 0
    reference: dict[str, Any] = {}
    if rank == 0:
        from transformers.integrations.deepspeed import set_hf_deepspeed_config, unset_hf_deepspeed_config

        unset_hf_deepspeed_config()  # the reference is an ordinary module, built with build_tiny's seeded init
        try:
            reference = dict(build_tiny(model_cfg, seed)[0].named_parameters(remove_duplicate=False))
        finally:
            if _ACTIVE_ZERO3_CONFIG is not None:
                set_hf_deepspeed_config(_ACTIVE_ZERO3_CONFIG)
    with torch.no_grad():
        for module_name, module in model.named_modules():
            params = list(module.named_parameters(recurse=False))
            if not params:
                continue
            with deepspeed.zero.GatheredParameters([p for _, p in params], modifier_rank=0):
                if rank == 0:
                    for name, param in params:
                        param.copy_(reference[f"{module_name}.{name}" if module_name else name])
    return model, tok


def save_tiny(model_cfg, directory: str | Path, seed: int = 0) -> Path:
    """Build the tiny default and save it in Hugging Face format (safetensors + tokenizer + chat template), so
    any tool (TRL, vLLM, `from_pretrained`) loads exactly the model ringctl trains."""
    model, tok = build_tiny(model_cfg, seed)
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(directory, safe_serialization=True)
    tok.save_pretrained(directory)
    return directory


def zero3_enabled(backends) -> bool:
    """True when the recipe trains with DeepSpeed ZeRO stage 3 (models must then be built partitioned)."""
    return (backends is not None and getattr(backends, "train", None) == "deepspeed"
            and backends.deepspeed.zero_stage == 3)


def activate_zero3(ds_config: dict[str, Any]) -> Any:
    """Make transformers build every following model under `deepspeed.zero.Init(config_dict_or_path=ds_config)`.

    transformers' DeepSpeed integration (5.x: `integrations.deepspeed.HfDeepSpeedConfig`, checked by
    `is_deepspeed_zero3_enabled()` in `PreTrainedModel._from_config` and `from_pretrained`): `from_config`
    constructs the modules inside zero.Init and initialises weights module by module on rank 0
    (`initialize_weights_zero3`); `from_pretrained` reads the checkpoint on rank 0 only (the other ranks use meta
    tensors) and loads it module by module into the partitioned parameters (`_load_state_dict_into_zero3_model`).
    No rank ever holds the whole model. The config object is kept alive here (transformers holds a weak
    reference) until `deactivate_zero3()`; torch.distributed is initialised first (gloo on CPU, nccl on GPU).
    """
    global _ACTIVE_ZERO3_CONFIG
    from transformers.integrations import HfDeepSpeedConfig

    from ringctl.train.engine import init_deepspeed_distributed

    if ds_config.get("zero_optimization", {}).get("stage") != 3:
        raise ValueError("activate_zero3 needs a DeepSpeed config with zero_optimization.stage = 3")
    init_deepspeed_distributed()
    _ACTIVE_ZERO3_CONFIG = HfDeepSpeedConfig(ds_config)
    return _ACTIVE_ZERO3_CONFIG


def deactivate_zero3() -> None:
    """Models built from now on are ordinary (unpartitioned) modules again."""
    global _ACTIVE_ZERO3_CONFIG
    from transformers.integrations.deepspeed import unset_hf_deepspeed_config

    unset_hf_deepspeed_config()
    _ACTIVE_ZERO3_CONFIG = None


def load_model_and_tokenizer(model_cfg, path: str | Path | None = None, seed: int = 0,
                             backends=None) -> tuple[Any, Any]:
    """`path` (a checkpoint directory) wins over model_cfg.name_or_path; 'tiny' builds the tiny default.

    backends: the recipe's `backends` section. Under DeepSpeed ZeRO-3 the model is built partitioned across the
    ranks (see `activate_zero3`; every rank must call this, it is collective) with the same DeepSpeed config
    that `DeepSpeedEngine` is then built with (`ringctl.train.engine.deepspeed_config`). The returned module's
    parameters are ZeRO-3 partitions (`p.ds_numel` elements in all, `p.ds_tensor` this rank's share, `p.numel()`
    0 outside a `deepspeed.zero.GatheredParameters` block); pass it to `build_engine` as usual, and stream its
    weights with `ringctl.rollout.weights.iter_checkpoint_weights`.
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if zero3_enabled(backends):
        from ringctl.train.engine import deepspeed_config

        activate_zero3(deepspeed_config(backends.deepspeed))
    source = str(path) if path is not None else model_cfg.name_or_path
    if source == "tiny":
        if not zero3_enabled(backends):
            return build_tiny(model_cfg, seed)
        model, tok = build_tiny_zero3(model_cfg, seed)
        mark_moe_leaf_modules(model)
        return model, tok
    dtype = getattr(torch, model_cfg.dtype) if model_cfg.dtype != "auto" else "auto"
    kwargs: dict[str, Any] = {"dtype": dtype, "trust_remote_code": model_cfg.trust_remote_code}
    if model_cfg.attn_implementation:
        kwargs["attn_implementation"] = model_cfg.attn_implementation
    model = AutoModelForCausalLM.from_pretrained(source, **kwargs)
    apply_experts_implementation(model, model_cfg.experts_implementation)
    if zero3_enabled(backends):
        mark_moe_leaf_modules(model)
    tok = AutoTokenizer.from_pretrained(source, trust_remote_code=model_cfg.trust_remote_code)
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    return model, tok


def enable_activation_checkpointing(model, enabled: bool = True) -> bool:
    """Activation checkpointing for training (a stage's `activation_checkpointing`): every decoder layer keeps only
    its input in the forward and recomputes its activations in the backward (transformers' gradient checkpointing,
    non-reentrant, so DDP, DeepSpeed ZeRO-3's parameter hooks and inputs without gradients work; the gradients are
    the ones without it). Generation is unaffected (no gradients there). A model without support is refused."""
    if not enabled:
        return False
    if not getattr(model, "supports_gradient_checkpointing", False):
        raise ValueError(f"activation_checkpointing: {type(model).__name__} does not support gradient checkpointing "
                         f"(transformers' supports_gradient_checkpointing); set activation_checkpointing: false")
    enable = getattr(model, "activation_checkpointing_enable", None)  # the name since transformers 5.20
    if enable is not None:
        enable(activation_checkpointing_kwargs={"use_reentrant": False})
    else:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    return True


def is_checkpointing(model) -> bool:
    """Whether activation checkpointing is on for `model` (or the model a DDP / DeepSpeed engine wraps)."""
    inner = getattr(model, "module", model)
    return any(getattr(m, "gradient_checkpointing", False) for m in inner.modules())


def mark_moe_leaf_modules(model) -> list[str]:
    """ZeRO-3 leaf modules for MoE blocks (every module with an `experts` child): ZeRO-3 records the order of
    module calls and needs it to be the same on every rank and step, but an MoE block calls its experts (and their
    activation modules) only for the experts its tokens were routed to. As a leaf, the block's parameters are
    gathered on entry and nothing inside it is traced (deepspeed.utils.set_z3_leaf_modules, DeepSpeed's answer for
    Mixtral / Qwen-MoE). Returns the class names marked."""
    import torch

    classes = {type(m) for m in model.modules() if isinstance(getattr(m, "experts", None), torch.nn.Module)}
    if classes:
        from deepspeed.utils import set_z3_leaf_modules

        set_z3_leaf_modules(model, sorted(classes, key=lambda c: c.__name__))
    return sorted(c.__name__ for c in classes)


def is_zero3_partitioned(model) -> bool:
    """True when the module's parameters are DeepSpeed ZeRO-3 partitions (built under zero.Init or wrapped by a
    ZeRO-3 engine)."""
    return any(hasattr(p, "ds_id") for p in model.parameters())


def count_parameters(model) -> int:
    return sum(p.numel() for p in model.parameters())


def mean_token_entropy(model, prompts: list[list[int]], responses: list[list[int]], batch_size: int = 16,
                       pad_id: int = 0) -> float:
    """Mean per-token entropy of the model's distribution over `responses` (teacher-forced), the signal the
    paper's SFT-checkpoint rule reads (entropy on RL prompts)."""
    import torch

    from ringctl.train.logprobs import build_training_batch, response_logprobs

    total, count = 0.0, 0
    pairs = [(p, r) for p, r in zip(prompts, responses) if r]
    with torch.no_grad():
        for i in range(0, len(pairs), batch_size):
            chunk = pairs[i:i + batch_size]
            batch = build_training_batch([p for p, _ in chunk], [r for _, r in chunk], pad_id=pad_id)
            out = response_logprobs(model, batch, with_entropy=True)
            total += float((out["entropy"] * batch.response_mask).sum())
            count += int(batch.response_mask.sum())
    return total / max(count, 1)
