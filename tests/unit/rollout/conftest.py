import pytest
import torch
import transformers

VOCAB = 48
EOS = 2
PAD = 0


def build_tiny_moe(seed: int = 0) -> transformers.Qwen3MoeForCausalLM:
    """A ~130k-parameter Qwen3-MoE (hidden 64, 2 layers, 4 experts, top-2), random init, fp32, eval mode."""
    config = transformers.Qwen3MoeConfig(
        vocab_size=VOCAB, hidden_size=64, intermediate_size=128, moe_intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, head_dim=16, num_experts=4, num_experts_per_tok=2,
        max_position_embeddings=256, bos_token_id=1, eos_token_id=EOS, pad_token_id=PAD)
    torch.manual_seed(seed)
    model = transformers.Qwen3MoeForCausalLM(config).eval()
    with torch.no_grad():
        # make EOS likely enough that some rows stop early and others run to max_new_tokens
        model.lm_head.weight[EOS] *= 0.0
        model.lm_head.bias = None
    return model


@pytest.fixture
def build_moe():
    """The builder itself, for tests that need several models (seed -> model)."""
    return build_tiny_moe


@pytest.fixture(scope="module")
def tiny_moe() -> transformers.Qwen3MoeForCausalLM:
    return build_tiny_moe()


@pytest.fixture
def prompts() -> list[list[int]]:
    return [[1, 5, 9, 12], [1, 7], [1, 20, 21, 22, 23, 30], [1, 3, 3]]
