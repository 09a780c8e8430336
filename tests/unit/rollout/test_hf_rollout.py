import math

import pytest
import torch

from ringctl.rl.logprobs import build_training_batch, response_logprobs
from ringctl.rollout.base import RolloutEngine, SamplingParams
from ringctl.rollout.hf import HFRolloutEngine, sample_tokens

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
