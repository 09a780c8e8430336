"""VLLMRolloutEngine's sleep / wake / weight-load ORDER and its refusal rules, against a fake `llm` object
that records calls. This checks ringctl's call sequence only; it says nothing about vLLM itself (vllm is not
imported here). Real vLLM is exercised by tests/gpu/test_vllm_rollout.py on a GPU."""

import pytest

from ringctl.rollout.base import SamplingParams
from ringctl.rollout.lifecycle import prepare_for_generate, release_after_generate
from ringctl.rollout.vllm import VLLMRolloutEngine, in_process_setting_error, require_vllm_version
from ringctl.rollout.weights import iter_checkpoint_weights


class FakeModel:
    def __init__(self, calls):
        self.calls = calls

    def load_weights(self, weights):
        names = [name for name, _ in weights]  # consumes the stream, as vLLM's load_weights does
        self.calls.append(("load_weights", len(names)))


class FakeLLM:
    def __init__(self, reachable=True):
        self.calls = []
        if reachable:
            runner = type("Runner", (), {"model": FakeModel(self.calls)})()
            worker = type("Worker", (), {"model_runner": runner})()
            executor = type("Executor", (), {"driver_worker": type("Wrapper", (), {"worker": worker})()})()
            self.llm_engine = type("Engine", (), {"model_executor": executor})()
        else:
            self.llm_engine = object()

    def sleep(self, level):
        self.calls.append(("sleep", level))

    def wake_up(self, tags=None):
        self.calls.append(("wake_up", tuple(tags) if tags else None))

    def reset_prefix_cache(self):
        self.calls.append(("reset_prefix_cache",))


def test_rl_trainer_step_order_is_wake_weights_load_wake_kv_then_sleep(tiny_moe):
    llm = FakeLLM()
    engine = VLLMRolloutEngine.from_llm(llm, sleep_level=2)
    n = len(list(iter_checkpoint_weights(tiny_moe)))
    prepare_for_generate(engine, tiny_moe)  # first step: engine awake, weights pushed
    release_after_generate(engine)
    prepare_for_generate(engine, tiny_moe)
    release_after_generate(engine)
    assert llm.calls == [("load_weights", n), ("reset_prefix_cache",), ("sleep", 2),
                         ("wake_up", ("weights",)), ("load_weights", n), ("reset_prefix_cache",),
                         ("wake_up", ("kv_cache",)), ("sleep", 2)]


def test_generate_refused_while_asleep_and_level2_needs_weights(tiny_moe):
    llm = FakeLLM()
    engine = VLLMRolloutEngine.from_llm(llm, sleep_level=2)
    engine.release_after_generate()
    with pytest.raises(RuntimeError, match="prepare_for_generate"):
        engine.generate([[1, 2]], n=1, params=SamplingParams())
    with pytest.raises(RuntimeError, match="level 2"):
        engine.prepare_for_generate(None)
    assert llm.calls == [("sleep", 2)]  # refused before any memory was woken (it would hold garbage weights)


def test_level1_wakes_without_weights_and_sleep_mode_off_never_sleeps():
    llm = FakeLLM()
    engine = VLLMRolloutEngine.from_llm(llm, sleep_level=1)
    engine.sleep()
    engine.wake()
    assert llm.calls == [("sleep", 1), ("wake_up", ("weights",)), ("wake_up", ("kv_cache",))]
    llm = FakeLLM()
    engine = VLLMRolloutEngine.from_llm(llm, enable_sleep_mode=False)
    engine.release_after_generate()
    engine.prepare_for_generate(None)
    assert llm.calls == []


def test_no_pickling_fallback_when_the_model_is_in_another_process(tiny_moe):
    engine = VLLMRolloutEngine.from_llm(FakeLLM(reachable=False))
    with pytest.raises(RuntimeError, match="VLLM_ENABLE_V1_MULTIPROCESSING"):
        engine.update_weights(tiny_moe)


def test_hf_like_engine_gets_update_weights_and_no_sleep():
    calls = []

    class HFLike:
        def update_weights(self, source):
            calls.append("update_weights")

        def sleep(self):
            calls.append("sleep")

    prepare_for_generate(HFLike(), object())
    release_after_generate(HFLike())
    assert calls == ["update_weights"]


def test_version_and_setting_checks_name_what_to_change():
    require_vllm_version("0.10.2")
    require_vllm_version("0.11.0")
    with pytest.raises(RuntimeError, match=r"0\.10\.2.*processed_logprobs"):
        require_vllm_version("0.10.1.1")
    assert in_process_setting_error({}, None) is None
    assert in_process_setting_error({"VLLM_ENABLE_V1_MULTIPROCESSING": "1"}, "external_launcher") is None
    assert "VLLM_ENABLE_V1_MULTIPROCESSING=0" in in_process_setting_error({"VLLM_ENABLE_V1_MULTIPROCESSING": "1"}, None)
    assert "torchrun" in in_process_setting_error({}, None, tensor_parallel_size=2)
