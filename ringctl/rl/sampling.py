"""Sampling and scoring with the current policy, shared by the rl stage, select_sft's probe and the difficulty
filter: prompt encoding, the rollout engine factory, verifier rewards, held-out evaluation (sharded over the
ranks). The device a rank computes on is ringctl.train.device's rule.
"""

from __future__ import annotations

from typing import Any

from ringctl.stats import mean_and_stderr
from ringctl.rl.hyper import RLHyper


def model_device(model: Any):
    return next(model.parameters()).device


def encode_prompt(tok, record: dict, max_prompt_tokens: int) -> list[int]:
    """The record's prompt through the chat template (as SFT encodes it), its last max_prompt_tokens tokens."""
    from ringctl.train.packing import encode_prompt as encode_chat_prompt

    return encode_chat_prompt(tok, record["prompt"])[-max_prompt_tokens:]


def default_router(hp: RLHyper):
    """The verifiers alone, by domain (what select_sft's probe and the difficulty filter use; a domain without a
    verifier is an error, not a silent 0)."""
    from ringctl.rewards.sources import RewardMixer, VerifierSource

    return RewardMixer([VerifierSource()], reward_workers=hp.reward_workers, reward_timeout_s=hp.reward_timeout_s)


def build_rollout_engine(policy, tok, recipe, path=None):
    """HF generate by default; vLLM when the recipe asks for it (GPU only), synced from the policy each step."""
    backends = getattr(recipe, "backends", None)
    if backends is not None and backends.rollout == "vllm":
        from ringctl.rollout.vllm import VLLMRolloutEngine

        return VLLMRolloutEngine(str(path), gpu_memory_utilization=backends.vllm.gpu_memory_utilization,
                                 tensor_parallel_size=backends.vllm.tensor_parallel_size,
                                 enable_sleep_mode=backends.vllm.enable_sleep_mode,
                                 trust_remote_code=recipe.model.trust_remote_code,
                                 stop_token_ids=[tok.eos_token_id])
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


def sample(policy, tok, rollout_engine, records: list[dict], hp: RLHyper, n: int, seed: int,
           row_offset: int = 0, total_rows: int | None = None) -> list:
    """n rollouts per record from the current policy (the engine synced first); rows row_offset.. of a global
    batch of total_rows (see SamplingParams). Every rank calls it, with or without records of its own."""
    import torch

    from ringctl.rollout.base import SamplingParams
    from ringctl.rollout.lifecycle import prepare_for_generate, release_after_generate

    policy.eval()
    prepare_for_generate(rollout_engine, policy)  # every rank: the weight stream is collective under ZeRO-3
    with torch.no_grad():
        rollouts = [] if not records else rollout_engine.generate([encode_prompt(tok, r, hp.max_prompt_tokens) for r in records], n=n,
                                           params=SamplingParams(temperature=hp.temperature, top_p=hp.top_p,
                                                                 max_new_tokens=hp.max_new_tokens, seed=seed,
                                                                 row_offset=row_offset, total_rows=total_rows))
    release_after_generate(rollout_engine)
    return rollouts


def sample_and_score(policy, tok, rollout_engine, records: list[dict], hp: RLHyper, n: int, seed: int):
    """n samples per prompt from the current policy and their verifier rewards: (rollouts, rewards)."""
    rollouts = sample(policy, tok, rollout_engine, records, hp, n, seed)
    return rollouts, default_router(hp).score(tok, records, rollouts, n).logged


def evaluate(policy, tok, rollout_engine, records: list[dict], hp: RLHyper, n: int, seed: int,
             router=None) -> dict[str, float]:
    """Held-out pass@1 over n samples per prompt: `eval/reward` (mean over prompts of each prompt's mean reward),
    `eval/reward_stderr` (standard error over prompts, so that a change can be judged against its noise) and
    `eval/reward/<domain>` per domain (with `eval/reward_stderr/<domain>` when there are several); rewards from
    `router` (the stage's reward sources; default: the verifiers). Under data parallelism every rank samples its
    block of the prompts (seeds per global row, so the figures equal one process's) and every rank gets the same
    result."""
    from ringctl.dist import all_gather_objects, rank_and_world, shard_bounds

    if not records:
        return {"eval/reward": float("nan")}
    rank, world = rank_and_world()
    lo, hi = shard_bounds(len(records), rank, world)
    mine = records[lo:hi]
    means_here: list[float] = []
    rollouts = sample(policy, tok, rollout_engine, mine, hp, n, seed, row_offset=lo * n, total_rows=len(records) * n)
    if mine:
        rewards = (router or default_router(hp)).score(tok, mine, rollouts, n).logged
        per_prompt: dict[int, list[float]] = {}
        for r, rew in zip(rollouts, rewards, strict=True):
            per_prompt.setdefault(r.prompt_index, []).append(rew)
        means_here = [sum(v) / len(v) for _, v in sorted(per_prompt.items())]
    means = [m for block in all_gather_objects(means_here) for m in block]
    mean, stderr = mean_and_stderr(means)
    out = {"eval/reward": mean, "eval/reward_stderr": stderr}
    by_domain: dict[str, list[float]] = {}
    for i, m in enumerate(means):
        by_domain.setdefault(records[i]["domain"], []).append(m)
    for d, v in by_domain.items():
        out[f"eval/reward/{d}"], domain_stderr = mean_and_stderr(v)
        if len(by_domain) > 1:  # with one domain these equal eval/reward and eval/reward_stderr
            out[f"eval/reward_stderr/{d}"] = domain_stderr
    return out

