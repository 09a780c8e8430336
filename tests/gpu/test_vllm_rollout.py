"""vLLM rollout engine on a GPU: log-probs, seeding, EOS, sleep/wake and weight sync against the HF model.

Skipped without CUDA (tests/conftest.py) or without vllm installed (vLLM >= 0.10.2, see ringctl/rollout/vllm.py).
"""

import pytest
import torch

pytestmark = pytest.mark.gpu

VOCAB, EOS = 64, 2


def _tiny_moe(seed):
    import transformers

    config = transformers.Qwen3MoeConfig(
        vocab_size=VOCAB, hidden_size=128, intermediate_size=256, moe_intermediate_size=128, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, head_dim=32, num_experts=4, num_experts_per_tok=2,
        max_position_embeddings=512, bos_token_id=1, eos_token_id=EOS, pad_token_id=0, tie_word_embeddings=False)
    torch.manual_seed(seed)
    return transformers.Qwen3MoeForCausalLM(config).to(torch.bfloat16)


@pytest.fixture(scope="module")
def engine_and_models(tmp_path_factory):
    pytest.importorskip("vllm")
    from ringctl.rollout.vllm import VLLMRolloutEngine

    path = tmp_path_factory.mktemp("tiny_moe")
    first, second = _tiny_moe(0), _tiny_moe(1)
    first.save_pretrained(path)
    engine = VLLMRolloutEngine(str(path), dtype="bfloat16", gpu_memory_utilization=0.2, max_model_len=256,
                               skip_tokenizer_init=True, enforce_eager=True)
    return engine, first.cuda().eval(), second.cuda().eval()


def _mean_abs_logprob_gap(model, rollouts):
    from ringctl.train.logprobs import build_training_batch, response_logprobs

    batch = build_training_batch([r.prompt_ids for r in rollouts], [r.response_ids for r in rollouts]).to("cuda")
    with torch.no_grad():
        expected = response_logprobs(model, batch, with_entropy=False)["logprobs"].float()
    got = torch.zeros_like(expected)
    for i, r in enumerate(rollouts):
        got[i, :r.length] = torch.tensor(r.logprobs, device="cuda")
    mask = batch.response_mask
    return float((got - expected)[mask].abs().mean())


PROMPTS = [[1, 5, 9, 12], [1, 7], [1, 20, 21, 22, 23, 30]]


def test_vllm_generate_logprobs_seed_and_eos(engine_and_models):
    from ringctl.rollout.base import RolloutEngine, SamplingParams

    engine, first, _ = engine_and_models
    assert isinstance(engine, RolloutEngine)
    params = SamplingParams(temperature=1.0, max_new_tokens=32, seed=3)
    rollouts = engine.generate(PROMPTS, n=4, params=params)
    assert [(r.prompt_index, r.sample_index) for r in rollouts] == [(p, s) for p in range(3) for s in range(4)]
    for r in rollouts:
        assert len(r.logprobs) == r.length
        assert (r.finished and r.response_ids[-1] == EOS) or (not r.finished and r.length == 32)
    assert _mean_abs_logprob_gap(first, rollouts) < 0.05  # bf16 kernels differ slightly from HF's
    again = engine.generate(PROMPTS, n=4, params=params)
    assert [r.response_ids for r in again] == [r.response_ids for r in rollouts]


def test_vllm_sleep_wake_and_weight_sync(engine_and_models):
    from ringctl.rollout.base import SamplingParams

    engine, first, second = engine_and_models
    params = SamplingParams(temperature=1.0, max_new_tokens=32, seed=4)
    before = engine.generate(PROMPTS, n=2, params=params)
    engine.sleep()
    engine.wake()
    assert [r.response_ids for r in engine.generate(PROMPTS, n=2, params=params)] == [r.response_ids for r in before]

    engine.sleep()
    engine.update_weights(second)  # pushed while asleep, as the RL loop does after an optimizer step
    engine.wake()
    after = engine.generate(PROMPTS, n=2, params=params)
    assert _mean_abs_logprob_gap(second, after) < 0.05
    assert _mean_abs_logprob_gap(first, after) > 0.2  # really the new weights
    engine.update_weights(first)


@pytest.mark.parametrize("level", [1, 2])
def test_vllm_rl_sequence_prepare_generate_release(engine_and_models, level):
    """The stage's sequence: prepare_for_generate(model) (wake weights, load, wake KV cache), generate,
    release_after_generate() (sleep). Level 2 discards the weights, so only the pushed ones can produce these
    log-probs."""
    from ringctl.rollout.base import SamplingParams
    from ringctl.rollout.lifecycle import prepare_for_generate, release_after_generate

    engine, first, second = engine_and_models
    engine.sleep_level = level
    params = SamplingParams(temperature=1.0, max_new_tokens=32, seed=5)
    for model in (second, first):
        prepare_for_generate(engine, model)
        rollouts = engine.generate(PROMPTS, n=2, params=params)
        release_after_generate(engine)
        assert _mean_abs_logprob_gap(model, rollouts) < 0.05
    free, total = torch.cuda.mem_get_info()
    assert free / total > 0.5  # asleep: the engine holds neither weights nor KV cache on the device
    prepare_for_generate(engine, first)
    engine.sleep_level = 1


def test_vllm_processed_logprobs_include_temperature(engine_and_models):
    """At temperature 0.5 the returned log-probs are those of softmax(logits / 0.5) (vLLM >= 0.10.2), not of the
    untempered distribution."""
    from ringctl.rollout.base import SamplingParams
    from ringctl.train.logprobs import build_training_batch, response_logprobs

    engine, first, _ = engine_and_models
    rollouts = engine.generate(PROMPTS, n=2, params=SamplingParams(temperature=0.5, max_new_tokens=16, seed=6))
    batch = build_training_batch([r.prompt_ids for r in rollouts], [r.response_ids for r in rollouts]).to("cuda")
    got = torch.zeros_like(batch.response_mask, dtype=torch.float32)
    for i, r in enumerate(rollouts):
        got[i, :r.length] = torch.tensor(r.logprobs, device="cuda")
    mask = batch.response_mask.bool()
    with torch.no_grad():
        tempered = response_logprobs(first, batch, temperature=0.5, with_entropy=False)["logprobs"].float()
        untempered = response_logprobs(first, batch, temperature=1.0, with_entropy=False)["logprobs"].float()
    assert float((got - tempered)[mask].abs().mean()) < 0.05
    assert float((got - untempered)[mask].abs().mean()) > float((got - tempered)[mask].abs().mean())
