"""Rollouts with vLLM (GPU only; vllm is imported lazily, it is not needed on CPU).

API targeted: vLLM >= 0.10.2 (V1 engine), the colocated set-up TRL uses (trl/generation/vllm_generation.py,
which pins vLLM 0.10.2 since huggingface/trl#4163 for the same reason as here):
- `vllm.LLM(model=..., enable_sleep_mode=True, logprobs_mode="processed_logprobs", seed=...,
  distributed_executor_backend="external_launcher" under torchrun)`. `processed_logprobs` returns the log-probs
  of the temperature-scaled distribution, the quantity the trainer recomputes as log π_θold; before 0.10.2 the
  "processed" log-probs did not include the temperature (prime-rl#697 patched vLLM 0.10.0's sampler for it), so
  older versions are refused (`require_vllm_version`).
- `LLM.generate([{"prompt_token_ids": ids}, ...], [vllm.SamplingParams(n, temperature, top_p, max_tokens, seed,
  logprobs=0, stop_token_ids, detokenize=False)])`: `logprobs=0` returns the sampled token's log-prob at every step
  (`CompletionOutput.logprobs[t][token_id].logprob`); `finish_reason` is "stop" (EOS / stop token, which is kept
  in `token_ids`) or "length".
- `LLM.sleep(level)` / `LLM.wake_up(tags)`: level 1 offloads the weights to host memory and drops the KV cache;
  level 2 drops both (no host copy: the weights must be pushed again before the next generate, which the RL
  loop does every step anyway). `wake_up(tags=["weights"])` maps the weight memory back without the KV cache,
  so the weight sync does not compete with a full KV cache for device memory; `wake_up(tags=["kv_cache"])` then
  restores the cache (verl's vLLM sharding manager and TRL's colocate mode use this order).
- weight sync: `llm.llm_engine.model_executor.driver_worker[.worker].model_runner.model.load_weights(iterable of
  (name, tensor))`, called in this process. That needs the engine core in this process: the `external_launcher`
  executor (one engine per torchrun rank; vLLM then runs the core in-process) or VLLM_ENABLE_V1_MULTIPROCESSING=0.
  Otherwise the model lives in another process and the only way in would be `collective_rpc`, which pickles every
  tensor through the engine-core socket: that is refused with an error naming the setting, never done silently.
  Names are checkpoint names, streamed one block at a time (ringctl/rollout/weights.py: transformers 5's fused
  MoE weights reverted, ZeRO-3 partitions gathered block by block).

The stage calls, for either engine (ringctl/rollout/lifecycle.py):

    prepare_for_generate(engine, policy)   # vLLM: wake weights -> load -> reset prefix cache -> wake KV cache
    rollouts = engine.generate(...)
    release_after_generate(engine)         # vLLM: sleep(level); HF: nothing
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any

from ringctl.rollout.base import Rollout, SamplingParams
from ringctl.rollout.weights import iter_named_weights

_PROMPT_SEED_STRIDE = 1_000_003  # one vLLM seed per prompt: the n samples of a prompt share one request
MIN_VLLM_VERSION = "0.10.2"
MULTIPROCESSING_ENV = "VLLM_ENABLE_V1_MULTIPROCESSING"
ALL_TAGS = frozenset({"weights", "kv_cache"})


def require_vllm_version(version: str) -> None:
    """Refuse vLLM versions whose processed log-probs do not include the sampling temperature."""
    from packaging.version import Version

    if Version(version) < Version(MIN_VLLM_VERSION):
        raise RuntimeError(
            f"vLLM {version} is too old for RL rollouts: ringctl needs vLLM >= {MIN_VLLM_VERSION}, where "
            f"logprobs_mode='processed_logprobs' returns the log-probs of the temperature-scaled distribution "
            f"(the trainer's log pi_old). Upgrade vllm (pip install 'vllm>={MIN_VLLM_VERSION}') or set "
            f"backends.rollout: hf.")


def in_process_setting_error(env: Mapping[str, str], executor_backend: str | None,
                             tensor_parallel_size: int = 1) -> str | None:
    """Why the vLLM model would not be reachable from this process (None when it is). Checked before the
    engine is built, so a wrong setting fails before loading the model, not at the first weight sync."""
    if executor_backend == "external_launcher":
        return None  # one engine per torchrun rank, each rank its own tensor-parallel worker, core in-process
    if env.get(MULTIPROCESSING_ENV, "0").strip().lower() not in ("0", "false"):
        return (f"{MULTIPROCESSING_ENV}={env.get(MULTIPROCESSING_ENV)} runs vLLM's engine core in another process, "
                f"so the weight sync could only pickle every tensor through the engine-core socket; ringctl refuses "
                f"that. Unset it or set {MULTIPROCESSING_ENV}=0 (or launch with torchrun, which uses "
                f"distributed_executor_backend='external_launcher').")
    if tensor_parallel_size > 1:
        return (f"tensor_parallel_size={tensor_parallel_size} without torchrun puts vLLM's workers in other processes "
                f"(weights would be pickled to them); launch the stage with torchrun so that each rank is one "
                f"tensor-parallel worker (distributed_executor_backend='external_launcher'), or use "
                f"tensor_parallel_size=1.")
    return None


class VLLMRolloutEngine:
    """RolloutEngine over a vllm.LLM built from a Hugging Face checkpoint directory.

    One engine per rank, colocated with training (under torchrun: `external_launcher`). Between rollouts the
    engine sleeps so the trainer has the device memory; `prepare_for_generate(weights_source)` wakes it in the
    standard order and loads the current training weights, `release_after_generate()` puts it back to sleep.

    sleep_level: 1 keeps a host copy of the weights (the engine can wake without a weights source); 2 keeps none
    (less host memory: 2 bytes x parameters per rank saved in bf16), and every prepare_for_generate must then
    push weights.
    """

    def __init__(self, model_path: str, *, dtype: str = "bfloat16", gpu_memory_utilization: float = 0.5,
                 tensor_parallel_size: int = 1, enable_sleep_mode: bool = True, sleep_level: int = 1,
                 max_model_len: int | None = None, seed: int = 0, trust_remote_code: bool = False,
                 stop_token_ids: Sequence[int] | None = None, **llm_kwargs: Any) -> None:
        import torch.distributed as dist

        # the engine core stays in this process so that the weight sync reaches the model directly
        os.environ.setdefault(MULTIPROCESSING_ENV, "0")
        import vllm

        require_vllm_version(vllm.__version__)
        kwargs: dict[str, Any] = dict(
            model=model_path, dtype=dtype, gpu_memory_utilization=gpu_memory_utilization,
            tensor_parallel_size=tensor_parallel_size, enable_sleep_mode=enable_sleep_mode, seed=seed,
            trust_remote_code=trust_remote_code, max_model_len=max_model_len, logprobs_mode="processed_logprobs",
        )
        if dist.is_available() and dist.is_initialized():
            kwargs["distributed_executor_backend"] = "external_launcher"  # one engine per torchrun rank
        kwargs.update(llm_kwargs)
        problem = in_process_setting_error(os.environ, kwargs.get("distributed_executor_backend"),
                                           tensor_parallel_size)
        if problem:
            raise RuntimeError(problem)
        llm = vllm.LLM(**kwargs)
        self._setup(llm, enable_sleep_mode, sleep_level, stop_token_ids)
        if self._in_process_model() is None:
            raise RuntimeError(
                f"vLLM's model is not reachable in this process (llm.llm_engine.model_executor.driver_worker"
                f".model_runner.model), so weights could only be pickled through the engine-core socket; ringctl "
                f"refuses that. Set {MULTIPROCESSING_ENV}=0 before vllm is imported, or launch with torchrun.")

    @classmethod
    def from_llm(cls, llm: Any, *, enable_sleep_mode: bool = True, sleep_level: int = 1,
                 stop_token_ids: Sequence[int] | None = None) -> VLLMRolloutEngine:
        """Wrap an existing `vllm.LLM` (built by the caller with logprobs_mode='processed_logprobs'; no checks)."""
        engine = cls.__new__(cls)
        engine._setup(llm, enable_sleep_mode, sleep_level, stop_token_ids)
        return engine

    def _setup(self, llm: Any, enable_sleep_mode: bool, sleep_level: int,
               stop_token_ids: Sequence[int] | None) -> None:
        if sleep_level not in (1, 2):
            raise ValueError(f"sleep_level must be 1 or 2, got {sleep_level}")
        self.llm = llm
        self.enable_sleep_mode = enable_sleep_mode
        self.sleep_level = sleep_level
        self.stop_token_ids = tuple(stop_token_ids) if stop_token_ids is not None else None
        self._sleeping: set[str] = set()  # vLLM tags currently released
        self._weights_lost = False  # slept at level 2 and not reloaded since

    # -- lifecycle: the sequence the stage runs around every generate() ---------------------------------------

    def prepare_for_generate(self, weights_source: Any | Mapping[str, Any] | None = None) -> None:
        """Make the engine ready to generate with `weights_source` (the training nn.Module, ZeRO-3 partitioned or
        not, or a checkpoint-format state dict; None keeps the engine's current weights).

        Order: wake_up(tags=["weights"]) -> load the weights, streamed block by block -> reset the prefix cache
        -> wake_up(tags=["kv_cache"]). Under ZeRO-3 every rank must call it (the stream gathers collectively).
        """
        if "weights" in self._sleeping:
            _empty_device_cache()  # the trainer's cached blocks would otherwise count against vLLM (as TRL does)
            self.llm.wake_up(tags=["weights"])
            self._sleeping.discard("weights")
        if weights_source is not None:
            self._load_weights(weights_source)
        elif self._weights_lost:
            raise RuntimeError("the engine slept at level 2, which discards its weights: pass the training model "
                               "to prepare_for_generate (or use sleep_level=1)")
        if "kv_cache" in self._sleeping:
            self.llm.wake_up(tags=["kv_cache"])
            self._sleeping.discard("kv_cache")

    def release_after_generate(self) -> None:
        """Free the engine's device memory for training: sleep(level) drops the KV cache and offloads (level 1)
        or discards (level 2) the weights. No-op without sleep mode."""
        if not self.enable_sleep_mode or self._sleeping == ALL_TAGS:
            return
        self.llm.sleep(level=self.sleep_level)
        self._sleeping = set(ALL_TAGS)
        self._weights_lost = self._weights_lost or self.sleep_level == 2

    # -- RolloutEngine -------------------------------------------------------------------------------------------

    def generate(self, prompts: Sequence[Sequence[int]], n: int, params: SamplingParams) -> list[Rollout]:
        if self._sleeping:
            raise RuntimeError(f"generate() while vLLM's {sorted(self._sleeping)} memory is released: call "
                               f"prepare_for_generate() first")
        from vllm import SamplingParams as VllmSamplingParams

        stop = params.stop_token_ids if params.stop_token_ids is not None else self.stop_token_ids
        requests = [{"prompt_token_ids": list(p)} for p in prompts]
        first = params.row_offset // n  # this call's first prompt in the global batch (data parallel ranks)
        sampling = [VllmSamplingParams(n=n, temperature=params.temperature, top_p=params.top_p,
                                       max_tokens=params.max_new_tokens,
                                       seed=(params.seed * _PROMPT_SEED_STRIDE + first + i) % (2**31 - 1),
                                       logprobs=0, stop_token_ids=list(stop) if stop else None, detokenize=False)
                    for i in range(len(prompts))]
        outputs = self.llm.generate(requests, sampling, use_tqdm=False)
        rollouts = []
        for prompt_index, output in enumerate(outputs):
            for sample_index, completion in enumerate(output.outputs):
                token_ids = list(completion.token_ids)
                logprobs = [step[token].logprob for step, token in zip(completion.logprobs, token_ids, strict=True)]
                rollouts.append(Rollout(prompt_index=prompt_index, sample_index=sample_index,
                                        prompt_ids=list(prompts[prompt_index]), response_ids=token_ids,
                                        logprobs=logprobs, finished=completion.finish_reason == "stop"))
        return rollouts

    def update_weights(self, source: Any | Mapping[str, Any]) -> None:
        """Push weights (an nn.Module, ZeRO-3 partitioned or not, or a checkpoint-format state dict). If the
        engine sleeps, its weight memory is woken first (the KV cache stays released until wake() or
        prepare_for_generate())."""
        if "weights" in self._sleeping:
            _empty_device_cache()
            self.llm.wake_up(tags=["weights"])
            self._sleeping.discard("weights")
        self._load_weights(source)

    def sleep(self) -> None:
        self.release_after_generate()

    def wake(self) -> None:
        if self._weights_lost and "weights" in self._sleeping:
            raise RuntimeError("the engine slept at level 2, which discards its weights: call "
                               "prepare_for_generate(model) (or update_weights) instead of wake()")
        self.prepare_for_generate(None)

    # -- helpers -------------------------------------------------------------------------------------------------

    def _load_weights(self, source: Any | Mapping[str, Any]) -> None:
        model = self._in_process_model()
        if model is None:
            raise RuntimeError(f"vLLM's model is not in this process ({MULTIPROCESSING_ENV} must be 0, or launch "
                               f"with torchrun): refusing to pickle the weights through the engine-core socket")
        # a generator, not a list: under ZeRO-3 one gathered block at a time; load_weights copies each tensor
        model.load_weights(weights=iter_named_weights(source))
        self.llm.reset_prefix_cache()  # cached prefixes were computed with the old weights
        self._weights_lost = False

    def _in_process_model(self) -> Any | None:
        try:
            worker = self.llm.llm_engine.model_executor.driver_worker
        except AttributeError:
            return None
        for path in (("worker", "model_runner", "model"), ("model_runner", "model")):  # V1 wrapper, older
            obj = worker
            try:
                for attr in path:
                    obj = getattr(obj, attr)
            except AttributeError:
                continue
            return obj
        return None


def _empty_device_cache() -> None:
    import torch

    if torch.cuda.is_available():
        torch.cuda.empty_cache()
