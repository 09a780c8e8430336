"""The RL trainer: one step of reasoning RL with C3PO (or the GRPO baseline), on every rank at once.

    trainer = RLTrainer(policy, tok, train_engine, rollout_engine, hp, ref_model=ref, rewards=mixer)
    metrics, deferred = trainer.step(records, deferred, step_seed, guard)

One step (Ring-lite §3.2 "C3PO"; the GRPO objective of §3.1):
  1. sample: each rank draws K responses for its block of the step's L prompts (ringctl/rollout/generation.py)
  2. score: verifiers and reward models, routed by domain (ringctl/rewards/sources.py)
  3. advantages: group-normalised over all K responses of a prompt, BEFORE any cut (ringctl/rl/advantages.py)
  4. select: C3PO's greedy fill up to the token budget Φ, the boundary response truncated, leftovers discarded or
     deferred; GRPO: every response, 1/|y_i| per response (ringctl/rl/budget.py)
  5. update: PPO epochs x minibatches x token-budgeted micro-batches (ringctl/rl/microbatch.py schedules them and
     holds every collective of the plan); once per step before the first update the log-prob pass (reference
     model for the KL, the trainer's own log-probs with old_logprobs: recompute); the loss is ringctl/rl/loss.py's
     -(1/Φ) Σ PPO-clip - β KL(ref) - α_ent H + α_bal LB + α_z Z.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from ringctl.rl.hyper import RLHyper

# token-weighted means over everything trained in a step (the loss's own metrics are per micro-batch means)
TOKEN_WEIGHTED = ("entropy", "kl", "policy/clip_frac", "policy/ratio_mean", "router/load_balance", "router/z_loss")


@dataclass(frozen=True)
class LossScaling:
    """How a step's loss is normalised: over Φ tokens (C3PO) or per response (GRPO); `loss_scale` undoes the
    gradient averaging over ranks where the loss is a global sum; `phi_total`: Φ summed over the ranks."""

    normalisation: str
    phi: int | None
    loss_scale: float
    phi_total: int | None


def plan_step(fresh: list, deferred: list, hp: RLHyper, rank: int, world: int):
    """(this rank's RankStepPlan, LossScaling): C3PO's greedy fill (over all ranks for budget_scope global), or
    GRPO's whole batch."""
    from ringctl.dist import all_gather_objects
    from ringctl.rl.budget import plan_c3po_ranks, plan_grpo_ranks

    gather = all_gather_objects if world > 1 else None
    if hp.algorithm == "c3po":
        global_scope = hp.budget_scope == "global"
        plan = plan_c3po_ranks(fresh, deferred, hp.token_budget, leftover=hp.leftover,
                               informative_first=hp.fill_order == "informative_first",
                               max_defer_steps=hp.max_defer_steps, rank=rank,
                               gather=gather if global_scope else None)
        return plan, LossScaling("token_budget", hp.token_budget, float(world) if global_scope else 1.0,
                                 hp.token_budget * (1 if global_scope else world))
    # GRPO: every response of the batch, per-response length normalisation, averaged over all ranks
    return plan_grpo_ranks(fresh, rank=rank, gather=gather), LossScaling("per_response", None, float(world), None)


@dataclass
class _Sums:
    """Per-rank sums of a step's training metrics (summed over the ranks afterwards)."""

    values: dict[str, float] = field(default_factory=dict)

    def add(self, key: str, value: Any) -> None:
        self.values[key] = self.values.get(key, 0.0) + float(value)


class _Rows:
    """Tensors of a micro-batch of the plan's responses (index lists into plan.responses; [] = a padding row)."""

    def __init__(self, plan, pad: int, device):
        self.responses, self.used, self.pad, self.device = plan.responses, plan.tokens_used, pad, device

    def batch(self, group: list[int]):
        from ringctl.train.logprobs import build_training_batch

        if not group:  # an empty micro-batch: one padding token through the model, loss 0
            return build_training_batch([[self.pad]], [[self.pad]], [1], pad_id=self.pad).to(self.device)
        return build_training_batch([self.responses[j].prompt_ids for j in group],
                                    [self.responses[j].response_ids for j in group],
                                    [self.used[j] for j in group], pad_id=self.pad).to(self.device)

    def per_token(self, group: list[int], width: int, values):
        import torch

        out = torch.zeros(len(group), width, device=self.device)
        for row, j in enumerate(group):
            n = min(self.used[j], width)
            out[row, :n] = values(self.responses[j])[:n].to(self.device)
        return out

    def slices(self, group: list[int], tensor) -> list:
        return [tensor[row, :self.used[j]].detach().float().cpu() for row, j in enumerate(group)]


class RLTrainer:
    """The policy (`policy`: the plain module, for sampling and its config; the training forward goes through
    `train_engine.model`, the DDP / DeepSpeed wrapper, so that gradients are reduced across ranks), its rollout
    engine, the frozen reference model (None when kl_beta is 0) and the reward sources (default: the verifiers)."""

    def __init__(self, policy, tok, train_engine, rollout_engine, hp: RLHyper, *, ref_model=None, rewards=None):
        from ringctl.rewards.sources import RewardMixer

        self.policy, self.tok, self.train_engine, self.rollout_engine = policy, tok, train_engine, rollout_engine
        self.hp, self.ref_model = hp, ref_model
        self.rewards = rewards or RewardMixer.verifiers(hp.reward_workers, hp.reward_timeout_s)

    # -- the step ----------------------------------------------------------------------------------------------
    def step(self, records: list[dict], deferred: list, step_seed: int, guard=None) -> tuple[dict, list]:
        """Sample, score, select, update. `records` are the step's L prompts, the same on every rank; each rank
        samples and scores its block of them (ringctl/dist.py). `guard` (a ringctl.train.numerics.StepGuard, or
        None) checks every optimizer update for a non-finite loss or gradient norm. Returns (metrics over all
        ranks, this rank's deferred responses for the next step)."""
        from ringctl.dist import rank_and_world, shard_bounds
        from ringctl.rl.advantages import score_rollouts
        from ringctl.rollout.generation import sample

        hp, (rank, world) = self.hp, rank_and_world()
        k = hp.samples_per_prompt
        t0 = time.perf_counter()
        # 1. this rank's block of prompts, K samples each; sampling seeds follow the global rollout row
        lo, hi = shard_bounds(len(records), rank, world)
        mine = records[lo:hi]
        rollouts = sample(self.policy, self.tok, self.rollout_engine, mine, hp, k, step_seed, row_offset=lo * k,
                          total_rows=len(records) * k)
        t1 = time.perf_counter()
        # 2. rewards: verifiers and reward models, routed by domain (the logged reward is the weighted raw sum)
        batch = self.rewards.score(self.tok, mine, rollouts, k)
        t2 = time.perf_counter()
        # 3. advantages over each full group of K (a group never straddles ranks), before any budget cut
        scored, adv = score_rollouts(rollouts, batch.for_advantage, k, prompt_ids_offset=lo)
        # 4. what enters the loss, then 5. the update
        plan, scaling = plan_step([r for r in scored if r.response_ids], deferred, hp, rank, world)
        train = self.train_on_plan(plan, scaling, guard)
        t3 = time.perf_counter()
        metrics = self._metrics(mine, rollouts, batch, plan, adv, train, scaling, (t0, t1, t2, t3))
        return metrics, plan.deferred

    def train_on_plan(self, plan, scaling: LossScaling, guard=None) -> dict:
        """PPO epochs x minibatches x token-budgeted micro-batches over this rank's selected responses: the
        schedule (ringctl/rl/microbatch.py), the log-prob pass, the update. Returns {"sums", "grad_norm"}."""
        from ringctl.rl.microbatch import schedule_minibatches
        from ringctl.rollout.generation import model_device

        hp = self.hp
        schedule = schedule_minibatches(plan, hp, global_loss=scaling.loss_scale != 1.0,
                                        lockstep=getattr(self.train_engine, "zero_stage", 0) == 3,
                                        policy=self.policy)
        rows = _Rows(plan, self.tok.pad_token_id or 0, model_device(self.policy))
        sums = _Sums()
        self._logprob_pass(schedule, rows, sums)
        grad_norms = self._update(schedule, rows, scaling, sums, guard)
        return {"sums": sums.values, "grad_norm": float(sum(grad_norms) / max(len(grad_norms), 1))}

    # -- the log-prob pass: once per step, before any update ------------------------------------------------------
    def _logprob_pass(self, schedule, rows: _Rows, sums: _Sums) -> None:
        """The reference model's log-probs (KL) and, with old_logprobs: recompute, the trainer's own log-probs
        (the rollout/trainer mismatch is measured against them)."""
        import torch

        from ringctl.rl.loss import k3_kl
        from ringctl.train.logprobs import response_logprobs

        hp = self.hp
        need_ref = self._uses_reference()
        recompute = hp.old_logprobs == "recompute"
        if not (need_ref or recompute):
            return
        share = self._share_prompts()
        self.policy.eval()
        with torch.no_grad():
            for mb in schedule:
                for group, min_chunks in zip(mb.micro, mb.min_chunks, strict=True):
                    batch = rows.batch(group)
                    kw = dict(with_entropy=False, share_prompts=share, chunk_tokens=hp.logprob_chunk_tokens,
                              min_chunks=min_chunks)
                    if need_ref:
                        ref = response_logprobs(self.ref_model, batch, hp.temperature, **kw)["logprobs"]
                        for j, lp in zip(group, rows.slices(group, ref)):
                            rows.responses[j].ref_logprobs = lp
                    if recompute:
                        cur = response_logprobs(self.train_engine.model, batch, hp.temperature, **kw)["logprobs"]
                        for j, lp in zip(group, rows.slices(group, cur)):
                            rows.responses[j].trainer_old_logprobs = lp
                            rollout_lp = rows.responses[j].old_logprobs[:len(lp)]
                            sums.add("mismatch_abs", (lp - rollout_lp).abs().sum())
                            sums.add("mismatch_kl", k3_kl(rollout_lp, lp).sum())
                            sums.add("mismatch_tokens", len(lp))

    # -- the update --------------------------------------------------------------------------------------------------
    def _update(self, schedule, rows: _Rows, scaling: LossScaling, sums: _Sums, guard) -> list[float]:
        """PPO epochs over the minibatches; one optimizer step per minibatch. Every rank runs the schedule's
        micro-batches (padding ones included: a forward whose loss is 0), since each backward reduces gradients
        across ranks and ZeRO-3 gathers parameters in every forward."""
        from ringctl.train.logprobs import response_logprobs

        hp, train_engine = self.hp, self.train_engine
        top_k = getattr(self.policy.config, "num_experts_per_tok", None)
        with_router = top_k is not None and (hp.load_balance_coef > 0 or hp.z_loss_coef > 0)
        share = self._share_prompts()
        self.policy.train()
        grad_norms = []
        for epoch in range(hp.ppo_epochs):
            for mb_index, mb in enumerate(schedule):
                if not mb.micro:
                    continue  # nothing selected for this minibatch on any rank: no optimizer step anywhere
                mb_loss = 0.0  # this rank's share of the update's loss, for the non-finite check before the update
                for u, (group, min_chunks) in enumerate(zip(mb.micro, mb.min_chunks, strict=True)):
                    last = u == len(mb.micro) - 1
                    batch = rows.batch(group)
                    # the entropy is logged always, differentiated only when the loss uses it
                    out = response_logprobs(train_engine.model, batch, hp.temperature, with_entropy=True,
                                            entropy_grad=hp.entropy_coef > 0, chunk_tokens=hp.logprob_chunk_tokens,
                                            min_chunks=min_chunks, output_router_logits=with_router,
                                            share_prompts=share)
                    if group:
                        loss = self._micro_batch_loss(out, batch, group, rows, mb, scaling, top_k, sums,
                                                      measure=epoch == 0, mismatch=epoch == 0 and mb_index == 0)
                        loss = guard.inject(loss) if guard else loss
                        sums.add("loss_sum", float(loss.detach()))
                        scaled = loss * scaling.loss_scale
                    else:  # the same forward and backward as a real micro-batch (ZeRO-3 traces them), weight 0
                        loss = out["logprobs"].sum() * 0.0
                        for layer in out["router_logits"] or ():
                            loss = loss + layer.sum() * 0.0
                        scaled = loss
                    mb_loss += float(loss.detach())
                    grad_norm = train_engine.accumulate(scaled, last=last,
                                                  check=guard.check(mb_loss) if guard and last else None)
                    if grad_norm is not None:
                        grad_norms.append(grad_norm)
        return grad_norms

    def _micro_batch_loss(self, out: dict, batch, group: list[int], rows: _Rows, mb, scaling: LossScaling,
                          top_k, sums: _Sums, measure: bool, mismatch: bool):
        """The policy loss of one micro-batch (ringctl/rl/loss.py); on the first PPO epoch its token-weighted
        metrics, and on the first minibatch (policy == pi_old there) the rollout/trainer mismatch."""
        import torch

        from ringctl.rl.loss import LossCoefficients, k3_kl, policy_loss

        hp = self.hp
        width = batch.response_ids.shape[1]
        recomputed = hp.old_logprobs == "recompute"
        old = rows.per_token(group, width, (lambda r: r.trainer_old_logprobs) if recomputed
                             else (lambda r: r.old_logprobs))
        ref = rows.per_token(group, width, lambda r: r.ref_logprobs) if self._uses_reference() else None
        is_weights = None
        if hp.tis_cap is not None:
            rollout_lp = rows.per_token(group, width, lambda r: r.old_logprobs)
            is_weights = torch.exp(old - rollout_lp).clamp(max=hp.tis_cap)
        micro_tokens = sum(rows.used[j] for j in group)
        coefs = LossCoefficients(clip_eps=hp.clip_eps, kl_beta=hp.kl_beta, entropy_coef=hp.entropy_coef,
                                 load_balance_coef=hp.load_balance_coef, z_loss_coef=hp.z_loss_coef)
        advantages = torch.tensor([rows.responses[j].advantage for j in group], device=rows.device)
        loss, m = policy_loss(out["logprobs"], old, advantages, batch.loss_mask,
                              normalisation=scaling.normalisation, token_budget=scaling.phi, coefs=coefs,
                              ref_logprobs=ref, entropy=out["entropy"], router_logits=out["router_logits"],
                              router_token_mask=out["router_token_mask"],
                              router_top_k=top_k if out["router_logits"] else None,
                              router_weight=micro_tokens / mb.tokens, is_weights=is_weights)
        if scaling.normalisation == "per_response":  # mean over the minibatch's responses on all ranks
            loss = loss * len(group) / mb.responses
        if measure:
            for name in TOKEN_WEIGHTED:
                if name in m:
                    sums.add(f"wsum/{name}", m[name] * micro_tokens)
            sums.add("metric_tokens", micro_tokens)
            if mismatch and not recomputed:  # policy == pi_old here: the rollout/trainer mismatch
                with torch.no_grad():
                    mask = batch.loss_mask.to(old.dtype)
                    cur = out["logprobs"].detach()
                    sums.add("mismatch_abs", ((cur - old).abs() * mask).sum())
                    sums.add("mismatch_kl", (k3_kl(old, cur) * mask).sum())
                    sums.add("mismatch_tokens", mask.sum())
        return loss

    def _uses_reference(self) -> bool:
        """The KL term's reference log-probs are computed (and read by the loss) only with a model and beta > 0."""
        return self.ref_model is not None and self.hp.kl_beta > 0

    def _share_prompts(self) -> bool:
        # activation checkpointing recomputes layers without their KV cache (transformers drops it): full rows then
        from ringctl.train.models import is_checkpointing

        checkpointed = is_checkpointing(self.policy)
        return self.hp.share_prompt_forward and self.train_engine.shares_prompt_forward and not checkpointed

    # -- metrics --------------------------------------------------------------------------------------------------
    def _metrics(self, mine, rollouts, batch, plan, adv, train: dict, scaling: LossScaling, times) -> dict:
        """The step's metrics over all ranks (per reward source: its mean, and a reward model's correlation with
        length)."""
        from ringctl.dist import sum_over_ranks
        from ringctl.rewards.sources import source_metrics, source_sums

        hp = self.hp
        t0, t1, t2, t3 = times
        rewards = batch.logged
        reward_results = [res for res in batch.verifier_results if res is not None]
        lengths = [r.length for r in rollouts]
        local = {"reward_sum": float(sum(rewards)), "rollouts": float(len(rewards)),
                 "unparsable": float(sum(1 for res in reward_results if res.meta.get("unparsable"))),
                 "tokens": float(sum(plan.tokens_used)), "responses": float(len(plan.responses)),
                 "deferred": float(len(plan.deferred)), "stale": float(plan.stale_dropped),
                 "length_sum": float(sum(lengths)),
                 "zero_groups": float(adv.zero_variance_groups), "groups": float(adv.num_groups),
                 **source_sums(batch, lengths), **train["sums"]}
        for r, rew in zip(rollouts, rewards, strict=True):
            d = mine[r.prompt_index]["domain"]
            local[f"domain_sum/{d}"] = local.get(f"domain_sum/{d}", 0.0) + rew
            local[f"domain_n/{d}"] = local.get(f"domain_n/{d}", 0.0) + 1
        total = sum_over_ranks(local)
        keys = sorted(total)
        step_time = t3 - t0
        per_token = max(total.get("metric_tokens", 0.0), 1.0)
        metrics = {
            "reward/mean": total["reward_sum"] / max(total["rollouts"], 1.0),
            **{f"reward/{key.split('/', 1)[1]}": total[key] / total["domain_n/" + key.split("/", 1)[1]]
               for key in keys if key.startswith("domain_sum/")},
            **(source_metrics(total, self.rewards.sources) if len(self.rewards.sources) > 1 else {}),
            # responses (or references) the verifier could not read: scored 0, counted so a format drift shows up
            "reward/unparsable": total["unparsable"],
            "train/tokens": total["tokens"],  # tokens that entered the loss, summed over ranks
            "train/responses": total["responses"],
            "train/deferred": total["deferred"],
            "train/stale_dropped": total["stale"],
            "response_length/mean": total["length_sum"] / max(total["rollouts"], 1.0),
            "entropy": 0.0, "kl": 0.0, "policy/clip_frac": 0.0,
            **{name: total[f"wsum/{name}"] / per_token for name in TOKEN_WEIGHTED if f"wsum/{name}" in total},
            "loss": total.get("loss_sum", 0.0) / hp.ppo_epochs,
            "grad_norm": train["grad_norm"],
            "zero_advantage_fraction": total["zero_groups"] / max(total["groups"], 1.0),
            "throughput/tokens_per_s": (total["length_sum"] + total["tokens"]) / step_time,
            "time/rollout_s": t1 - t0, "time/reward_s": t2 - t1, "time/train_s": t3 - t2, "time/step_s": step_time,
        }
        if "mismatch_tokens" in total and total["mismatch_tokens"] > 0:
            metrics["rollout/logprob_abs_diff"] = total["mismatch_abs"] / total["mismatch_tokens"]
            metrics["rollout/kl"] = total["mismatch_kl"] / total["mismatch_tokens"]
        if scaling.phi_total is not None:
            metrics["train/budget_shortfall"] = float(scaling.phi_total - total["tokens"])
        return metrics


# ----------------------------------------------------------------------------------------------------------------
# building the pieces
# ----------------------------------------------------------------------------------------------------------------
def build_train_engine(policy, backends, hp: RLHyper, steps: int, world_size: int = 1):
    """The policy's optimizer engine: one optimizer step per minibatch per PPO epoch, constant rate after warm-up."""
    from ringctl.train.engine import OptimSpec, build_engine

    spec = OptimSpec(lr=hp.lr, weight_decay=hp.weight_decay, warmup_steps=hp.warmup_steps,
                     total_steps=steps * hp.ppo_epochs * hp.minibatches, schedule="constant",
                     max_grad_norm=hp.max_grad_norm, micro_batches=1)
    return build_engine(policy, spec, backends, world_size)


def reference_model(recipe, init_path, policy):
    """The frozen reference policy: a copy of the starting policy, or under DeepSpeed ZeRO-3 the checkpoint loaded
    partitioned again and wrapped by a DeepSpeed engine without optimizer (its forward gathers the parameters,
    so no rank holds the whole reference model either)."""
    from ringctl.rollout.generation import frozen_copy
    from ringctl.train.models import load_model_and_tokenizer, zero3_enabled

    backends = getattr(recipe, "backends", None)
    if not zero3_enabled(backends):
        return frozen_copy(policy)
    import deepspeed

    from ringctl.train.engine import deepspeed_config

    ref, _ = load_model_and_tokenizer(recipe.model, path=init_path, backends=backends)
    ref.requires_grad_(False)
    ref.eval()
    config = deepspeed_config(backends.deepspeed)
    config.pop("optimizer", None)
    wrapped, *_ = deepspeed.initialize(model=ref, config=config)
    wrapped.eval()
    return wrapped


def load_policy(recipe, init, hp: RLHyper, steps: int, device, world_size: int, checkpointing: bool):
    """(policy, tok, rollout_engine, ref_model, train_engine) of RL from the checkpoint `init`, on every rank of the
    stage: the policy (under ZeRO-3 built partitioned: no rank holds it whole, and the train engine wraps it as it
    is), its rollout engine (built before the policy moves to the device: vLLM starts only while its share of the
    device is free, then sleeps until used), the frozen reference model (None when kl_beta is 0) and the optimizer
    engine (DDP or DeepSpeed over `world_size` ranks)."""
    from ringctl.rollout.generation import build_rollout_engine
    from ringctl.train.models import enable_activation_checkpointing, is_zero3_partitioned, load_model_and_tokenizer

    policy, tok = load_model_and_tokenizer(recipe.model, path=init, backends=recipe.backends)
    enable_activation_checkpointing(policy, checkpointing)
    rollout_engine = build_rollout_engine(policy, tok, recipe, init, hp.max_prompt_tokens + hp.max_new_tokens)
    if not is_zero3_partitioned(policy):
        policy.to(device)
    ref_model = reference_model(recipe, init, policy) if hp.kl_beta > 0 else None
    return policy, tok, rollout_engine, ref_model, build_train_engine(policy, recipe.backends, hp, steps, world_size)


def probe(recipe, init, prompts: list[dict], hp: RLHyper, steps: int, seed: int, device, checkpointing: bool,
          eval_fn) -> tuple[float, int]:
    """select_sft's short C3PO probe of the checkpoint `init`: `steps` RL steps over every rank of the stage, set up
    as the RL stage sets up (load_policy: the recipe's training engine and rollout engine); returns
    (eval_fn(policy, tok, rollout_engine), RL tokens trained on over all ranks). Everything is released before it
    returns (the next candidate is loaded into the same memory)."""
    from ringctl.dist import rank_and_world
    from ringctl.rl.prompts import PromptSampler
    from ringctl.rollout.generation import release_memory, shutdown

    _, world = rank_and_world()
    policy, tok, rollout_engine, ref_model, train_engine = load_policy(recipe, init, hp, steps, device, world,
                                                                       checkpointing)
    try:
        trainer = RLTrainer(policy, tok, train_engine, rollout_engine, hp, ref_model=ref_model)
        sampler = PromptSampler(prompts, seed)  # every rank draws the same prompts, samples its block
        tokens, deferred = 0, []
        for s in range(steps):
            m, deferred = trainer.step(sampler.next(hp.prompts_per_step), deferred, step_seed=seed * 100_003 + s)
            tokens += int(m["train/tokens"])
        return eval_fn(policy, tok, rollout_engine), tokens
    finally:
        shutdown(rollout_engine)
        train_engine.close()
        del policy, ref_model, rollout_engine, train_engine
        release_memory()
