"""Rollouts with vLLM (GPU only; vllm is imported lazily, it is not needed on CPU).

API targeted: vLLM >= 0.10 (V1 engine), the colocated set-up TRL 1.16 uses (trl/generation/vllm_generation.py):
- `vllm.LLM(model=..., enable_sleep_mode=True, logprobs_mode="processed_logprobs", seed=...,
  distributed_executor_backend="external_launcher" under torchrun)`; `processed_logprobs` makes the returned
  log-probs those of the temperature-scaled distribution, the quantity the trainer recomputes as log π_θold.
- `LLM.generate([{"prompt_token_ids": ids}, ...], [vllm.SamplingParams(n, temperature, top_p, max_tokens, seed,
  logprobs=0, stop_token_ids, detokenize=False)])`: `logprobs=0` returns the sampled token's log-prob at every step
  (`CompletionOutput.logprobs[t][token_id].logprob`); `finish_reason` is "stop" (EOS / stop token, which is kept
  in `token_ids`) or "length".
- `LLM.sleep(level)` / `LLM.wake_up(tags)`: level 1 offloads weights to host memory and drops the KV cache,
  level 2 drops both (weights must then be pushed again, which update_weights does after wake_up(["weights"])).
- weight sync: `llm.llm_engine.model_executor.driver_worker.model_runner.model.load_weights(iterable of (name,
  tensor))` in-process (VLLM_ENABLE_V1_MULTIPROCESSING=0 or the external_launcher backend, as in TRL's colocate
  mode); names are checkpoint names (ringctl/rollout/weights.py reverts transformers 5's fused MoE weights).
  Without an in-process worker it falls back to `llm.collective_rpc(fn)` (the function is shipped to the workers).
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any

from ringctl.rollout.base import Rollout, SamplingParams
from ringctl.rollout.weights import iter_named_weights

_PROMPT_SEED_STRIDE = 1_000_003  # one vLLM seed per prompt: the n samples of a prompt share one request


def _load_weights_on_worker(worker: Any, weights: list[tuple[str, Any]]) -> None:
    """Runs inside a vLLM worker (collective_rpc fallback)."""
    worker.model_runner.model.load_weights(weights=weights)


class VLLMRolloutEngine:
    """RolloutEngine over a vllm.LLM built from a Hugging Face checkpoint directory.

    The engine is created once per rank (colocated with training); `sleep()` frees its GPU memory while the
    trainer runs and `wake()` restores it. `update_weights(model)` pushes the current training weights.
    """

    def __init__(self, model_path: str, *, dtype: str = "bfloat16", gpu_memory_utilization: float = 0.5,
                 tensor_parallel_size: int = 1, enable_sleep_mode: bool = True, sleep_level: int = 1,
                 max_model_len: int | None = None, seed: int = 0, trust_remote_code: bool = False,
                 stop_token_ids: Sequence[int] | None = None, **llm_kwargs: Any) -> None:
        # Keep the engine core in this process so that update_weights can reach the model directly.
        os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
        import torch.distributed as dist
        from vllm import LLM

        kwargs: dict[str, Any] = dict(
            model=model_path, dtype=dtype, gpu_memory_utilization=gpu_memory_utilization,
            tensor_parallel_size=tensor_parallel_size, enable_sleep_mode=enable_sleep_mode, seed=seed,
            trust_remote_code=trust_remote_code, max_model_len=max_model_len, logprobs_mode="processed_logprobs",
        )
        if dist.is_available() and dist.is_initialized():
            kwargs["distributed_executor_backend"] = "external_launcher"  # one engine per torchrun rank
        kwargs.update(llm_kwargs)
        self.llm = LLM(**kwargs)
        self.enable_sleep_mode = enable_sleep_mode
        self.sleep_level = sleep_level
        self.stop_token_ids = tuple(stop_token_ids) if stop_token_ids is not None else None
        self._asleep = False

    # -- RolloutEngine -------------------------------------------------------------------------------------------

    def generate(self, prompts: Sequence[Sequence[int]], n: int, params: SamplingParams) -> list[Rollout]:
        from vllm import SamplingParams as VllmSamplingParams

        if self._asleep:
            raise RuntimeError("generate() on a sleeping engine: call wake() first")
        stop = params.stop_token_ids if params.stop_token_ids is not None else self.stop_token_ids
        requests = [{"prompt_token_ids": list(p)} for p in prompts]
        sampling = [VllmSamplingParams(n=n, temperature=params.temperature, top_p=params.top_p,
                                       max_tokens=params.max_new_tokens,
                                       seed=(params.seed * _PROMPT_SEED_STRIDE + i) % (2**31 - 1),
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
        """Push weights (an nn.Module, or a checkpoint-format state dict) into the engine.

        Under DeepSpeed ZeRO-3 the caller must gather the parameters first (e.g. pass a state dict it gathered).
        """
        woke_for_update = False
        if self._asleep and self.enable_sleep_mode:
            self.llm.wake_up(tags=["weights"])  # load_weights must write into mapped device memory
            woke_for_update = True
        weights = list(iter_named_weights(source))
        runner_model = self._in_process_model()
        if runner_model is not None:
            runner_model.load_weights(weights=weights)
        else:
            cpu_weights = [(name, tensor.detach().cpu()) for name, tensor in weights]
            self.llm.collective_rpc(_load_weights_on_worker, args=(cpu_weights,))
        self.llm.reset_prefix_cache()  # cached prefixes were computed with the old weights
        if woke_for_update:
            self.llm.sleep(level=1)  # back to sleep; weights stay offloaded to host memory until wake()

    def sleep(self) -> None:
        if self.enable_sleep_mode and not self._asleep:
            self.llm.sleep(level=self.sleep_level)
        self._asleep = True

    def wake(self) -> None:
        if self.enable_sleep_mode and self._asleep:
            self.llm.wake_up()
        self._asleep = False

    # -- helpers -------------------------------------------------------------------------------------------------

    def _in_process_model(self) -> Any | None:
        try:
            return self.llm.llm_engine.model_executor.driver_worker.model_runner.model
        except AttributeError:
            return None
