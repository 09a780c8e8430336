"""rl: reasoning RL with C3PO (or the GRPO baseline), from a chosen SFT checkpoint.

    ringctl run recipes/tiny.yaml            # filter -> sft -> select -> reasoning_rl

One step, top to bottom (METHOD.md, "C3PO"):
  1. sample L prompts; K responses each (rollout engine: HF generate, or vLLM on GPU)
  2. rewards through the verifier registry (process pool)
  3. group-normalised advantages over all K responses of a prompt, BEFORE any cut
  4. C3PO: greedy fill up to the token budget phi (the boundary response truncated, so exactly phi tokens enter
     the loss); leftovers discarded or deferred to the next step.  GRPO: all responses, 1/|y_i| per response
  5. loss = -(1/phi) sum PPO-clip - beta KL(ref) - alpha_ent H + alpha_bal LB + alpha_z Z ; optimizer step
Resumable state (optimizer, RNG incl. sampling, prompt sampler position, deferred rollouts, step) every
`save_every` steps and on SIGTERM; Hugging Face weights every `save_every` steps and at the end.
"""

from __future__ import annotations

import random
import time
from pathlib import Path

from stages.rl_config import Config, RLHyper  # noqa: F401  (Config is the stage's schema)

KIND = "rl"
OUTPUTS = ("final", "checkpoints")
CODE_DEPS = ("ringctl.rl", "ringctl.rollout", "ringctl.rewards", "ringctl.train", "stages.rl_config")

# keys of the resumable state (checkpoint layout is part of the resume contract)
STATE_FILE = "rl_state.pt"
KEY_STEP, KEY_SAMPLER, KEY_DEFERRED, KEY_RNG, KEY_OPTIM = "step", "sampler", "deferred", "rng", "optimizer"


# ----------------------------------------------------------------------------------------------------------------
# prompts
# ----------------------------------------------------------------------------------------------------------------

class PromptSampler:
    """Epoch-wise shuffled prompts; its position is part of the resumable state."""

    def __init__(self, records: list[dict], seed: int):
        if not records:
            raise ValueError("no RL prompts")
        self.records, self.seed, self.epoch, self.pos = records, seed, 0, 0
        self._order = self._shuffle()

    def _shuffle(self) -> list[int]:
        order = list(range(len(self.records)))
        random.Random(self.seed * 1_000_003 + self.epoch).shuffle(order)
        return order

    def next(self, n: int) -> list[dict]:
        out = []
        while len(out) < n:
            if self.pos == len(self._order):
                self.epoch, self.pos = self.epoch + 1, 0
                self._order = self._shuffle()
            out.append(self.records[self._order[self.pos]])
            self.pos += 1
        return out

    def state(self) -> dict:
        return {"epoch": self.epoch, "pos": self.pos}

    def load(self, state: dict) -> None:
        self.epoch, self.pos = state["epoch"], state["pos"]
        self._order = self._shuffle()


def load_prompts(path: Path, domains: list[str] | None) -> list[dict]:
    from ringctl.data.records import iter_jsonl

    records = [r for r in iter_jsonl(path) if domains is None or r.get("domain") in domains]
    if not records:
        raise ValueError(f"no RL prompts in {path}" + (f" for domains {domains}" if domains else ""))
    return records


def split_heldout(records: list[dict], fraction: float, seed: int) -> tuple[list[dict], list[dict]]:
    order = list(range(len(records)))
    random.Random(seed).shuffle(order)
    n_held = int(len(records) * fraction)
    held = {i for i in order[:n_held]}
    return [r for i, r in enumerate(records) if i not in held], [records[i] for i in sorted(held)]


def encode_prompt(tok, record: dict, max_prompt_tokens: int) -> list[int]:
    """The record's prompt through the chat template (as SFT encodes it), its last max_prompt_tokens tokens."""
    from ringctl.train.packing import encode_prompt as encode_chat_prompt

    return encode_chat_prompt(tok, record["prompt"])[-max_prompt_tokens:]


# ----------------------------------------------------------------------------------------------------------------
# rewards
# ----------------------------------------------------------------------------------------------------------------

def score(tok, records: list[dict], rollouts: list, hp: RLHyper) -> list[float]:
    return [res.score for res in score_results(tok, records, rollouts, hp)]


def score_results(tok, records: list[dict], rollouts: list, hp: RLHyper) -> list:
    """The verifiers' RewardResults (score, reason, meta) for each rollout."""
    from ringctl.rewards import score_batch

    items = [{"domain": records[r.prompt_index]["domain"],
              "response": tok.decode(r.response_ids, skip_special_tokens=True),
              "reference": records[r.prompt_index]["answer"],
              "meta": records[r.prompt_index].get("metadata") or {}} for r in rollouts]
    return score_batch(items, workers=hp.reward_workers, timeout=hp.reward_timeout_s)


# ----------------------------------------------------------------------------------------------------------------
# one RL step
# ----------------------------------------------------------------------------------------------------------------

def rl_step(policy, ref_model, engine, tok, rollout_engine, records: list[dict], hp: RLHyper,
            deferred: list, step_seed: int, world_size: int = 1) -> tuple[dict, list]:
    """Sample, score, select, update. Returns (metrics, deferred responses for the next step).

    `policy` is the plain module (sampling, config); the training forward goes through `engine.model` (the
    DDP / DeepSpeed wrapper) so that gradients are synchronised across ranks."""
    import torch

    from ringctl.rl.advantages import score_rollouts
    from ringctl.rl.budget import plan_c3po_step, rank_token_budget
    from ringctl.rl.logprobs import build_training_batch, response_logprobs
    from ringctl.rl.loss import LossCoefficients, policy_loss
    from ringctl.rollout.base import SamplingParams

    t0 = time.perf_counter()
    prompt_ids = [encode_prompt(tok, r, hp.max_prompt_tokens) for r in records]
    policy.eval()
    rollout_engine.update_weights(policy)
    with torch.no_grad():
        rollouts = rollout_engine.generate(prompt_ids, n=hp.samples_per_prompt, params=SamplingParams(
            temperature=hp.temperature, top_p=hp.top_p, max_new_tokens=hp.max_new_tokens, seed=step_seed))
    t1 = time.perf_counter()
    reward_results = score_results(tok, records, rollouts, hp)
    rewards = [res.score for res in reward_results]
    t2 = time.perf_counter()

    # advantages over each full group of K, before any budget cut
    scored, adv = score_rollouts(rollouts, rewards, hp.samples_per_prompt)
    fresh = [r for r in scored if r.response_ids]
    if hp.fill_order == "informative_first":
        fresh = informative_first(fresh)

    if hp.algorithm == "c3po":
        budget = rank_token_budget(hp.token_budget, world_size, hp.budget_scope)
        plan = plan_c3po_step(fresh, budget, hp.leftover, carried_over=deferred)
        selected, tokens_used, next_deferred = plan.responses, plan.tokens_used, plan.deferred
        normalisation, phi = "token_budget", budget
    else:  # GRPO: every response of the batch, per-response length normalisation
        selected, tokens_used, next_deferred = fresh, [r.length for r in fresh], []
        normalisation, phi = "per_response", None

    coefs = LossCoefficients(clip_eps=hp.clip_eps, kl_beta=hp.kl_beta, entropy_coef=hp.entropy_coef,
                             load_balance_coef=hp.load_balance_coef, z_loss_coef=hp.z_loss_coef)
    top_k = getattr(policy.config, "num_experts_per_tok", None)
    share = hp.share_prompt_forward and engine.shares_prompt_forward
    policy.train()
    metrics_acc: dict[str, float] = {}
    grad_norms = []
    n_updates = 0
    order = list(range(len(selected)))
    for _epoch in range(hp.ppo_epochs):
        for mb in range(hp.minibatches):
            idx = order[mb::hp.minibatches]
            if not idx:
                continue
            batch = build_training_batch([selected[i].prompt_ids for i in idx],
                                         [selected[i].response_ids for i in idx],
                                         [tokens_used[i] for i in idx], pad_id=tok.pad_token_id or 0)
            width = batch.response_ids.shape[1]
            old = torch.zeros(len(idx), width)
            for row, i in enumerate(idx):
                n = min(tokens_used[i], width)
                old[row, :n] = selected[i].old_logprobs[:n]
            ref = None
            if ref_model is not None and hp.kl_beta > 0:
                with torch.no_grad():
                    ref = response_logprobs(ref_model, batch, hp.temperature, with_entropy=False,
                                            share_prompts=share)["logprobs"]
            out = response_logprobs(engine.model, batch, hp.temperature, with_entropy=True,
                                    output_router_logits=top_k is not None and (hp.load_balance_coef > 0 or
                                                                                  hp.z_loss_coef > 0),
                                    share_prompts=share)
            # per-minibatch share of phi keeps minibatches additive: their losses sum to the step's loss
            loss, m = policy_loss(out["logprobs"], old, torch.tensor([selected[i].advantage for i in idx]),
                                  batch.loss_mask, normalisation=normalisation, token_budget=phi, coefs=coefs,
                                  ref_logprobs=ref, entropy=out["entropy"], router_logits=out["router_logits"],
                                  router_token_mask=out["router_token_mask"],
                                  router_top_k=top_k if out["router_logits"] else None)
            if normalisation == "per_response":
                loss = loss * len(idx) / max(len(selected), 1)
            engine.backward(loss)
            grad_norms.append(engine.step())
            n_updates += 1
            for k, v in m.items():
                metrics_acc[k] = metrics_acc.get(k, 0.0) + (v if k == "tokens" else v / hp.minibatches)
    t3 = time.perf_counter()

    per_domain: dict[str, list[float]] = {}
    for r, rew in zip(rollouts, rewards):
        per_domain.setdefault(records[r.prompt_index]["domain"], []).append(rew)
    lengths = [r.length for r in rollouts]
    step_time = t3 - t0
    trained_tokens = sum(tokens_used)
    metrics = {
        "reward/mean": sum(rewards) / len(rewards),
        **{f"reward/{d}": sum(v) / len(v) for d, v in per_domain.items()},
        # responses (or references) the verifier could not read: scored 0, counted so a format drift shows up
        "reward/unparsable": float(sum(1 for res in reward_results if res.meta.get("unparsable"))),
        "train/tokens": float(trained_tokens),
        "train/responses": float(len(selected)),
        "train/deferred": float(len(next_deferred)),
        "response_length/mean": sum(lengths) / len(lengths),
        "entropy": metrics_acc.get("entropy", 0.0) / max(hp.ppo_epochs, 1),
        "kl": metrics_acc.get("kl", 0.0) / max(hp.ppo_epochs, 1),
        "policy/clip_frac": metrics_acc.get("policy/clip_frac", 0.0) / max(hp.ppo_epochs, 1),
        "loss": metrics_acc.get("loss", 0.0) / max(hp.ppo_epochs, 1),
        "grad_norm": float(sum(grad_norms) / max(len(grad_norms), 1)),
        "zero_advantage_fraction": adv.zero_variance_groups / max(adv.num_groups, 1),
        "throughput/tokens_per_s": (sum(lengths) + trained_tokens) / step_time,
        "time/rollout_s": t1 - t0, "time/reward_s": t2 - t1, "time/train_s": t3 - t2, "time/step_s": step_time,
    }
    return metrics, next_deferred


def informative_first(responses: list) -> list:
    """Responses of groups with a learning signal (some advantage != 0) first, then the zero-advantage groups;
    a stable sort, so prompt order and each group's order are kept. Under C3PO the budget then goes to the
    responses that carry a policy gradient before those that only add entropy / KL terms."""
    informative = {r.prompt_index for r in responses if r.advantage != 0}
    return sorted(responses, key=lambda r: r.prompt_index not in informative)


def sample_and_score(policy, tok, rollout_engine, records: list[dict], hp: RLHyper, n: int, seed: int):
    """n samples per prompt from the current policy and their verifier rewards: (rollouts, rewards)."""
    import torch

    from ringctl.rollout.base import SamplingParams

    policy.eval()
    rollout_engine.update_weights(policy)
    with torch.no_grad():
        rollouts = rollout_engine.generate([encode_prompt(tok, r, hp.max_prompt_tokens) for r in records], n=n,
                                           params=SamplingParams(temperature=hp.temperature, top_p=hp.top_p,
                                                                 max_new_tokens=hp.max_new_tokens, seed=seed))
    return rollouts, score(tok, records, rollouts, hp)


def evaluate(policy, tok, rollout_engine, records: list[dict], hp: RLHyper, n: int, seed: int) -> dict[str, float]:
    """Held-out pass@1 over n samples per prompt: `eval/reward` (mean over prompts of each prompt's mean reward),
    `eval/reward_stderr` (standard error over prompts, so that a change can be judged against its noise) and
    `eval/reward/<domain>` per domain."""
    import math

    if not records:
        return {"eval/reward": float("nan")}
    rollouts, rewards = sample_and_score(policy, tok, rollout_engine, records, hp, n, seed)
    per_prompt: dict[int, list[float]] = {}
    for r, rew in zip(rollouts, rewards):
        per_prompt.setdefault(r.prompt_index, []).append(rew)
    means = [sum(v) / len(v) for _, v in sorted(per_prompt.items())]
    mean = sum(means) / len(means)
    var = sum((m - mean) ** 2 for m in means) / (len(means) - 1) if len(means) > 1 else 0.0
    out = {"eval/reward": mean, "eval/reward_stderr": math.sqrt(var / len(means))}
    by_domain: dict[str, list[float]] = {}
    for i, m in enumerate(means):
        by_domain.setdefault(records[i]["domain"], []).append(m)
    out.update({f"eval/reward/{d}": sum(v) / len(v) for d, v in by_domain.items()})
    return out


# ----------------------------------------------------------------------------------------------------------------
# the stage
# ----------------------------------------------------------------------------------------------------------------

def _frozen_copy(model, trainable: bool = False):
    import copy

    clone = copy.deepcopy(model)
    clone.train(trainable)
    for p in clone.parameters():
        p.requires_grad_(trainable)
    return clone


def _engine(policy, recipe, hp: RLHyper, steps: int, world_size: int = 1):
    from ringctl.train.engine import OptimSpec, build_engine

    spec = OptimSpec(lr=hp.lr, weight_decay=hp.weight_decay, warmup_steps=hp.warmup_steps,
                     total_steps=steps * hp.ppo_epochs * hp.minibatches, schedule="constant",
                     max_grad_norm=hp.max_grad_norm, micro_batches=1)
    return build_engine(policy, spec, getattr(recipe, "backends", None), world_size)


def _rollout_engine(policy, tok, recipe, path=None):
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

    return HFRolloutEngine(policy, pad_token_id=tok.pad_token_id, stop_token_ids=[tok.eos_token_id])


def _save_hf(engine, tok, target: Path, is_main: bool) -> None:
    """Hugging Face weights, renamed into place when complete."""
    import os
    import shutil

    from ringctl.train.engine import barrier

    tmp = target.parent / f".tmp-{target.name}"
    if is_main:
        shutil.rmtree(tmp, ignore_errors=True)
    barrier()
    engine.save_hf(tmp, tok)
    if is_main:
        shutil.rmtree(target, ignore_errors=True)
        os.replace(tmp, target)
    barrier()


def run(cfg: Config, ctx) -> dict:
    import torch

    from ringctl.pipeline.context import Artifact
    from ringctl.train import determinism
    from ringctl.train.engine import barrier, init_distributed
    from ringctl.train.models import load_model_and_tokenizer

    # -- setup --------------------------------------------------------------------------------------------------
    determinism.seed_everything(ctx.seed, ctx.deterministic)
    if ctx.recipe.backends.train == "torch":
        init_distributed()
    policy, tok = load_model_and_tokenizer(ctx.recipe.model, path=ctx.input(cfg.init))
    ref_model = _frozen_copy(policy) if cfg.kl_beta > 0 else None
    engine = _engine(policy, ctx.recipe, cfg, cfg.steps, ctx.world_size)
    rollout_engine = _rollout_engine(policy, tok, ctx.recipe, ctx.input(cfg.init))
    records = load_prompts(ctx.input(cfg.prompts), cfg.domains)
    if cfg.eval_prompts is not None:
        train_records, heldout = records, load_prompts(ctx.input(cfg.eval_prompts), cfg.domains)
    else:
        train_records, heldout = split_heldout(records, cfg.heldout_fraction, ctx.seed)
    heldout = heldout[:cfg.eval_prompts_count]
    sampler = PromptSampler(train_records, ctx.seed)
    deferred: list = []
    step = 0
    ckpt_root = ctx.outputs_dir / "checkpoints"

    state_dir = ctx.resume_state()
    if state_dir is not None:
        state = torch.load(state_dir / STATE_FILE, weights_only=False)
        step, deferred = state[KEY_STEP], state[KEY_DEFERRED]
        sampler.load(state[KEY_SAMPLER])
        engine.load_state(state_dir / "engine")
        determinism.set_rng_state(state[KEY_RNG])
        ctx.tracker.rewind(step)
        if step >= cfg.steps:
            # killed after the last state, before returning: training is done, only the outputs are left
            final = ckpt_root / f"step-{step:06d}"
            if not (final / "config.json").is_file():
                raise RuntimeError(f"resume at step {step} of {cfg.steps} would do zero steps but {final} is missing")
            return {"final": Artifact(final, {"step": step}), "checkpoints": Artifact(ckpt_root)}
        print(f"[rl] resumed at step {step}/{cfg.steps}", flush=True)

    def save_state() -> None:
        rng = determinism.get_rng_state()
        with ctx.save_state_shared(f"step-{step:06d}", barrier) as d:
            engine.save_state(d / "engine")
            if ctx.is_main:
                torch.save({KEY_STEP: step, KEY_SAMPLER: sampler.state(), KEY_DEFERRED: deferred, KEY_RNG: rng},
                           d / STATE_FILE)

    # -- train loop -----------------------------------------------------------------------------------------------
    if step == 0 and heldout:
        ctx.tracker.log_metrics(0, **evaluate(policy, tok, rollout_engine, heldout, cfg, cfg.eval_samples,
                                              ctx.seed + 7))
    while step < cfg.steps:
        records_step = sampler.next(cfg.prompts_per_step)
        metrics, deferred = rl_step(policy, ref_model, engine, tok, rollout_engine, records_step, cfg,
                                    deferred, step_seed=ctx.seed * 100_003 + step, world_size=ctx.world_size)
        step += 1
        if step % cfg.eval_every == 0 or step == cfg.steps:
            metrics.update(evaluate(policy, tok, rollout_engine, heldout, cfg, cfg.eval_samples, ctx.seed + 7))
        metrics["lr"] = engine.lr()
        ctx.tracker.log_metrics(step, **metrics)
        print(f"[rl] step {step}/{cfg.steps} reward {metrics['reward/mean']:.3f} tokens "
              f"{metrics['train/tokens']:.0f} {metrics['time/step_s']:.2f}s", flush=True)
        if step % cfg.save_every == 0 or step == cfg.steps:
            _save_hf(engine, tok, ckpt_root / f"step-{step:06d}", ctx.is_main)
            save_state()
        elif ctx.should_stop():
            save_state()
        if ctx.should_stop() and step < cfg.steps:
            return {}

    final = ckpt_root / f"step-{step:06d}"
    return {"final": Artifact(final, {"step": step}), "checkpoints": Artifact(ckpt_root)}


def run_probe(model, tok, prompts: list[dict], hp: RLHyper, steps: int, seed: int, eval_fn) -> tuple[float, int]:
    """select_sft's short C3PO probe: `steps` RL steps on a copy of `model`; returns (eval_fn(policy), RL tokens)."""
    policy = _frozen_copy(model, trainable=True)
    engine = _engine(policy, None, hp, steps)
    rollout_engine = _rollout_engine(policy, tok, None)
    ref = _frozen_copy(model) if hp.kl_beta > 0 else None
    sampler = PromptSampler(prompts, seed)
    tokens, deferred = 0, []
    for s in range(steps):
        m, deferred = rl_step(policy, ref, engine, tok, rollout_engine, sampler.next(hp.prompts_per_step), hp,
                              deferred, step_seed=seed * 100_003 + s)
        tokens += int(m["train/tokens"])
    return eval_fn(policy, rollout_engine), tokens


