import math

import pytest
import torch

from ringctl.rollout.base import RolloutEngine, SamplingParams
from ringctl.rollout.hf import HFRolloutEngine, sample_tokens
from ringctl.train.logprobs import build_training_batch, response_logprobs

EOS = 2  # the fixture model's eos_token_id
PARAMS = SamplingParams(temperature=1.0, max_new_tokens=24, seed=7)


def _teacher_forced(model, rollouts, temperature):
    batch = build_training_batch([r.prompt_ids for r in rollouts], [r.response_ids for r in rollouts], pad_id=0)
    with torch.no_grad():
        out = response_logprobs(model, batch, temperature=temperature, with_entropy=False)
    return out["logprobs"], batch.response_mask


@pytest.mark.parametrize("temperature", [1.0, 0.7])
def test_sampling_logprobs_equal_teacher_forced_log_softmax(tiny_moe, prompts, temperature):
    engine = HFRolloutEngine(tiny_moe)
    params = SamplingParams(temperature=temperature, max_new_tokens=24, seed=3)
    rollouts = engine.generate(prompts, n=3, params=params)
    assert len(rollouts) == 12
    assert [(r.prompt_index, r.sample_index) for r in rollouts] == [(p, s) for p in range(4) for s in range(3)]
    expected, mask = _teacher_forced(tiny_moe, rollouts, temperature)
    got = torch.zeros_like(expected)
    for i, r in enumerate(rollouts):
        assert len(r.logprobs) == r.length
        got[i, :r.length] = torch.tensor(r.logprobs)
    torch.testing.assert_close(got[mask], expected[mask], atol=2e-5, rtol=1e-5)


def test_same_seed_same_samples_other_seed_differs(tiny_moe, prompts):
    engine = HFRolloutEngine(tiny_moe)
    first = engine.generate(prompts, n=2, params=PARAMS)
    again = engine.generate(prompts, n=2, params=PARAMS)
    assert [r.response_ids for r in first] == [r.response_ids for r in again]
    assert [r.logprobs for r in first] == [r.logprobs for r in again]
    other = engine.generate(prompts, n=2, params=SamplingParams(max_new_tokens=24, seed=8))
    assert [r.response_ids for r in first] != [r.response_ids for r in other]
    # the K samples of one prompt differ from each other
    assert first[0].response_ids != first[1].response_ids


def test_eos_stops_a_row_and_max_new_tokens_cuts_the_others(tiny_moe, prompts):
    assert tiny_moe.config.eos_token_id == EOS
    rollouts = HFRolloutEngine(tiny_moe).generate(prompts, n=4, params=PARAMS)
    finished = [r for r in rollouts if r.finished]
    cut = [r for r in rollouts if not r.finished]
    assert finished and cut, "the fixture model should produce both cases"
    for r in finished:
        assert r.response_ids[-1] == EOS and EOS not in r.response_ids[:-1] and r.length <= 24
    for r in cut:
        assert r.length == 24 and EOS not in r.response_ids


def test_custom_stop_token(tiny_moe, prompts):
    rollouts = HFRolloutEngine(tiny_moe).generate(prompts, n=2, params=SamplingParams(
        max_new_tokens=24, seed=7, stop_token_ids=(5, 6)))
    for r in rollouts:
        assert all(t not in (5, 6) for t in r.response_ids[:-1])
        assert r.finished == (r.response_ids[-1] in (5, 6))


def test_dropping_finished_rows_changes_nothing(tiny_moe, prompts):
    dropped = HFRolloutEngine(tiny_moe, drop_finished=True).generate(prompts, n=4, params=PARAMS)
    kept = HFRolloutEngine(tiny_moe, drop_finished=False).generate(prompts, n=4, params=PARAMS)
    assert any(r.finished and r.length < 24 for r in dropped)  # rows really left the batch early
    assert [r.response_ids for r in dropped] == [r.response_ids for r in kept]
    assert [r.finished for r in dropped] == [r.finished for r in kept]
    for a, b in zip(dropped, kept, strict=True):
        torch.testing.assert_close(torch.tensor(a.logprobs), torch.tensor(b.logprobs), atol=2e-5, rtol=1e-5)


@pytest.mark.parametrize("rows", [5, 1])  # 1: every sequence generated alone, without padding
def test_chunking_the_batch_changes_nothing(tiny_moe, prompts, rows):
    whole = HFRolloutEngine(tiny_moe, max_batch_rows=64).generate(prompts, n=3, params=PARAMS)
    chunked = HFRolloutEngine(tiny_moe, max_batch_rows=rows).generate(prompts, n=3, params=PARAMS)
    assert [r.response_ids for r in whole] == [r.response_ids for r in chunked]
    for a, b in zip(whole, chunked, strict=True):
        torch.testing.assert_close(torch.tensor(a.logprobs), torch.tensor(b.logprobs), atol=2e-5, rtol=1e-5)


def test_sample_tokens_inverse_cdf_with_top_p_hand_example():
    # probs [0.5, 0.3, 0.2]; top_p 0.7 keeps tokens 0 and 1 (mass before token 2 is 0.8 >= 0.7), total 0.8
    logits = torch.log(torch.tensor([[0.5, 0.3, 0.2]])).repeat(3, 1)
    u = torch.tensor([0.5, 0.7, 0.999])  # targets 0.4 -> token 0, 0.56 -> token 1, 0.799 -> token 1 (never 2)
    tokens, logprobs = sample_tokens(logits, u, temperature=1.0, top_p=0.7)
    assert tokens.tolist() == [0, 1, 1]
    # log-probs are those of the untruncated distribution
    torch.testing.assert_close(logprobs, torch.log(torch.tensor([0.5, 0.3, 0.3])))
    # top_p = 1: cdf [0.5, 0.8, 1.0]; u = 0.9 -> token 2
    assert sample_tokens(logits[:1], torch.tensor([0.9]), 1.0, 1.0)[0].tolist() == [2]
    # temperature 0: greedy
    greedy, lp = sample_tokens(logits[:1], torch.tensor([0.99]), 0.0, 1.0)
    assert greedy.tolist() == [0] and float(lp) == pytest.approx(math.log(0.5), abs=1e-6)


def test_update_weights_sleep_wake_and_protocol(build_moe, prompts):
    policy, stale = build_moe(seed=0), build_moe(seed=1)
    engine = HFRolloutEngine(stale)
    assert isinstance(engine, RolloutEngine)
    before = engine.generate(prompts, n=1, params=PARAMS)
    engine.update_weights(policy)  # an nn.Module
    after = engine.generate(prompts, n=1, params=PARAMS)
    reference = HFRolloutEngine(policy).generate(prompts, n=1, params=PARAMS)
    assert [r.response_ids for r in after] == [r.response_ids for r in reference]
    assert [r.response_ids for r in before] != [r.response_ids for r in after]
    engine.update_weights(build_moe(seed=1).state_dict())  # a state dict
    assert [r.response_ids for r in engine.generate(prompts, n=1, params=PARAMS)] == [r.response_ids for r in before]
    engine.sleep()
    with pytest.raises(RuntimeError, match="wake"):
        engine.generate(prompts, n=1, params=PARAMS)
    engine.wake()
    assert len(engine.generate(prompts, n=1, params=PARAMS)) == len(prompts)


def test_training_mode_is_restored(build_moe, prompts):
    model = build_moe().train()
    HFRolloutEngine(model).generate(prompts, n=1, params=SamplingParams(max_new_tokens=4))
    assert model.training


def test_decode_fast_path_matches_the_plain_loop(tiny_moe, prompts, monkeypatch):
    """The preallocated cache + single-query attention (CPU, sdpa) samples what transformers' DynamicCache and
    sdpa sample, and the model's attention setting is back to sdpa afterwards."""
    import ringctl.rollout.decode as decode
    import ringctl.rollout.hf as hf

    assert tiny_moe.config._attn_implementation == "sdpa"
    calls = []
    real = decode.single_query_attention

    def counting(*args, **kwargs):
        calls.append(args[1].shape[2])
        return real(*args, **kwargs)

    from transformers.modeling_utils import AttentionInterface

    assert decode._register()
    monkeypatch.setitem(AttentionInterface._global_mapping, decode.DECODE_ATTENTION, counting)
    fast = HFRolloutEngine(tiny_moe).generate(prompts, n=3, params=PARAMS)
    assert tiny_moe.config._attn_implementation == "sdpa"
    assert 1 in calls and any(q > 1 for q in calls)  # decode steps and the prompt forward both went through it

    import contextlib

    from transformers import DynamicCache
    monkeypatch.setattr(hf, "preallocated_cache", lambda config, capacity: DynamicCache(config=config))
    monkeypatch.setattr(hf, "cpu_decode_attention", lambda model: contextlib.nullcontext(False))
    calls.clear()
    plain = HFRolloutEngine(tiny_moe).generate(prompts, n=3, params=PARAMS)
    assert not calls
    assert [r.response_ids for r in fast] == [r.response_ids for r in plain]
    assert [r.finished for r in fast] == [r.finished for r in plain]
    for a, b in zip(fast, plain, strict=True):
        torch.testing.assert_close(torch.tensor(a.logprobs), torch.tensor(b.logprobs), atol=2e-5, rtol=1e-5)


def test_single_query_attention_equals_sdpa():
    from types import SimpleNamespace

    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    from ringctl.rollout.decode import single_query_attention

    torch.manual_seed(0)
    module = SimpleNamespace(num_key_value_groups=2, training=False, is_causal=True)
    q, k, v = torch.randn(3, 4, 1, 16), torch.randn(3, 2, 10, 16), torch.randn(3, 2, 10, 16)
    mask = torch.ones(3, 1, 1, 10, dtype=torch.bool)
    mask[0, ..., :4] = False  # a left-padded row
    for m in (mask, None):
        got, _ = single_query_attention(module, q, k, v, m, scaling=0.25)
        want, _ = sdpa_attention_forward(module, q, k, v, m, scaling=0.25)
        assert got.shape == want.shape == (3, 1, 4, 16)
        torch.testing.assert_close(got, want, atol=1e-6, rtol=1e-5)


def test_preallocated_cache_layer_writes_views_selects_rows_and_refuses_overflow(tiny_moe):
    from ringctl.rollout.decode import full_attention_only, preallocated_cache

    cache = preallocated_cache(tiny_moe.config, capacity=6)
    assert full_attention_only(tiny_moe.config) and len(cache.layers) == tiny_moe.config.num_hidden_layers
    layer = cache.layers[0]
    prompt = torch.arange(3 * 2 * 4 * 2, dtype=torch.float32).reshape(3, 2, 4, 2)
    keys, _ = layer.update(prompt, -prompt)
    assert keys.shape == (3, 2, 4, 2) and torch.equal(keys, prompt) and cache.get_seq_length() == 4
    step = torch.full((3, 2, 1, 2), 7.0)
    keys, values = layer.update(step, -step)
    assert keys.shape == (3, 2, 5, 2) and torch.equal(keys[:, :, 4:], step) and torch.equal(values[:, :, :4], -prompt)
    layer.batch_select_indices(torch.tensor([2, 0]))
    assert torch.equal(layer.keys, torch.cat([prompt, step], dim=2)[[2, 0]])
    layer.update(step[:2], step[:2])
    with pytest.raises(RuntimeError, match="overflowed"):
        layer.update(step[:2], step[:2])


def test_buffers_reregistered_during_decode_are_not_left_as_inference_tensors(prompts):
    """The loop runs under torch.inference_mode; a dynamic RoPE re-registers inv_freq once a sequence outgrows
    max_position_embeddings, and training must be able to use (and update) that buffer afterwards."""
    import transformers

    config = transformers.Qwen3MoeConfig(
        vocab_size=48, hidden_size=64, intermediate_size=128, moe_intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, head_dim=16, num_experts=4, num_experts_per_tok=2,
        max_position_embeddings=16, bos_token_id=1, eos_token_id=EOS, pad_token_id=0,
        rope_parameters={"rope_type": "dynamic", "factor": 2.0, "rope_theta": 10000.0})
    torch.manual_seed(0)
    model = transformers.Qwen3MoeForCausalLM(config)
    before = model.model.rotary_emb.inv_freq
    HFRolloutEngine(model, stop_token_ids=[47]).generate(prompts, n=2, params=SamplingParams(max_new_tokens=30))
    assert model.model.rotary_emb.inv_freq is not before  # the dynamic RoPE did re-register it
    assert not any(b.is_inference() for b in model.buffers())
    model.train()
    model(input_ids=torch.randint(3, 40, (2, 30))).logits.sum().backward()
    model.model.rotary_emb.inv_freq.mul_(1.0)  # an in-place update outside inference mode
