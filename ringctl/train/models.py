"""Models and tokenizers: any Hugging Face causal LM (local path or hub id), and the tiny CPU default.

The tiny default is a Qwen3-MoE-family model built from a config (seeded random init, ~1-5M parameters) with a
character-level tokenizer built locally with `tokenizers`, both saved in Hugging Face format, so every later
stage (and vLLM) loads them with `from_pretrained` like any other checkpoint.
"""

from __future__ import annotations

import string
from pathlib import Path
from typing import Any

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


def load_model_and_tokenizer(model_cfg, path: str | Path | None = None, seed: int = 0) -> tuple[Any, Any]:
    """`path` (a checkpoint directory) wins over model_cfg.name_or_path; 'tiny' builds the tiny default."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    source = str(path) if path is not None else model_cfg.name_or_path
    if source == "tiny":
        return build_tiny(model_cfg, seed)
    dtype = getattr(torch, model_cfg.dtype) if model_cfg.dtype != "auto" else "auto"
    kwargs: dict[str, Any] = {"dtype": dtype, "trust_remote_code": model_cfg.trust_remote_code}
    if model_cfg.attn_implementation:
        kwargs["attn_implementation"] = model_cfg.attn_implementation
    model = AutoModelForCausalLM.from_pretrained(source, **kwargs)
    tok = AutoTokenizer.from_pretrained(source, trust_remote_code=model_cfg.trust_remote_code)
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    return model, tok


def count_parameters(model) -> int:
    return sum(p.numel() for p in model.parameters())


def mean_token_entropy(model, prompts: list[list[int]], responses: list[list[int]], batch_size: int = 16,
                       pad_id: int = 0) -> float:
    """Mean per-token entropy of the model's distribution over `responses` (teacher-forced), the signal the
    paper's SFT-checkpoint rule reads (entropy on RL prompts)."""
    import torch

    from ringctl.rl.logprobs import build_training_batch, response_logprobs

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
