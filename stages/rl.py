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

# keys of the resumable state (checkpoint layout is part of the resume contract)
STATE_FILE = "rl_state.pt"
KEY_STEP, KEY_SAMPLER, KEY_DEFERRED, KEY_RNG, KEY_OPTIM = "step", "sampler", "deferred", "rng", "optimizer"
KEY_WORLD, KEY_SKIPPED = "world_size", "skipped_steps"


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


# ----------------------------------------------------------------------------------------------------------------
# one RL step
# ----------------------------------------------------------------------------------------------------------------

def rl_step(policy, ref_model, engine, tok, rollout_engine, records: list[dict], hp: RLHyper,
            deferred: list, step_seed: int, world_size: int = 1, router=None, guard=None) -> tuple[dict, list]:
    """Sample, score, select, update, on every rank at once. Returns (metrics over all ranks, this rank's
    deferred responses for the next step).

    `records` are the step's L prompts, the same on every rank; each rank samples and scores its block of them
    (ringctl/dist.py). `policy` is the plain module (sampling, config); the training forward goes through
    `engine.model` (the DDP / DeepSpeed wrapper) so that gradients are reduced across ranks. `router` scores the
    rollouts (ringctl/rewards/sources.py; default: the verifiers alone). `guard` (ringctl.train.numerics.StepGuard
    at this step, or None) checks every optimizer update for a non-finite loss or gradient norm."""

    from ringctl.rl.advantages import score_rollouts
    from ringctl.rl.budget import RankStepPlan, plan_c3po_ranks
    from ringctl.dist import all_gather_objects, rank_and_world, shard_bounds, sum_over_ranks
    from ringctl.rewards.sources import source_metrics, source_sums
    from ringctl.rl.sampling import default_router, sample

    rank, world = rank_and_world()
    k = hp.samples_per_prompt
    t0 = time.perf_counter()
    # 1. this rank's block of prompts, K samples each; sampling seeds follow the global rollout row
    lo, hi = shard_bounds(len(records), rank, world)
    mine = records[lo:hi]
    rollouts = sample(policy, tok, rollout_engine, mine, hp, k, step_seed, row_offset=lo * k,
                      total_rows=len(records) * k)
    t1 = time.perf_counter()
    # 2. rewards: verifiers and reward models, routed by domain (the logged reward is the weighted raw sum)
    router = router or default_router(hp)
    batch = router.score(tok, mine, rollouts, k)
    rewards = batch.logged
    reward_results = [res for res in batch.verifier_results if res is not None]
    t2 = time.perf_counter()
    # 3. advantages over each full group of K (a group never straddles ranks), before any budget cut
    scored, adv = score_rollouts(rollouts, batch.for_advantage, k, prompt_ids_offset=lo)
    fresh = [r for r in scored if r.response_ids]

    # 4. what enters the loss: C3PO's greedy fill up to phi (over all ranks for budget_scope global), or GRPO's
    #    whole batch. loss_scale undoes the gradient averaging over ranks where the loss is a global sum.
    gather = all_gather_objects if world > 1 else None
    if hp.algorithm == "c3po":
        global_scope = hp.budget_scope == "global"
        plan = plan_c3po_ranks(fresh, deferred, hp.token_budget, leftover=hp.leftover,
                               informative_first=hp.fill_order == "informative_first",
                               max_defer_steps=hp.max_defer_steps, rank=rank,
                               gather=gather if global_scope else None)
        normalisation, phi = "token_budget", hp.token_budget
        loss_scale = float(world) if global_scope else 1.0
        phi_total = hp.token_budget * (1 if global_scope else world)
    else:  # GRPO: every response of the batch, per-response length normalisation, averaged over all ranks
        before = sum(n for n in (gather or (lambda x: [x]))(len(fresh))[:rank])
        plan = RankStepPlan(fresh, [r.length for r in fresh], [before + i for i in range(len(fresh))], [], 0, 0,
                            sum(r.length for r in fresh), 0)
        normalisation, phi, loss_scale, phi_total = "per_response", None, float(world), None

    train = _train_on_plan(policy, ref_model, engine, tok, plan, hp, normalisation, phi, loss_scale, guard)
    t3 = time.perf_counter()

    # 5. metrics over all ranks (per reward source: its mean, and a reward model's correlation with length)
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
        **(source_metrics(total, router.sources) if len(router.sources) > 1 else {}),
        # responses (or references) the verifier could not read: scored 0, counted so a format drift shows up
        "reward/unparsable": total["unparsable"],
        "train/tokens": total["tokens"],  # tokens that entered the loss, summed over ranks
        "train/responses": total["responses"],
        "train/deferred": total["deferred"],
        "train/stale_dropped": total["stale"],
        "response_length/mean": total["length_sum"] / max(total["rollouts"], 1.0),
        "entropy": 0.0, "kl": 0.0, "policy/clip_frac": 0.0,
        **{name: total[f"wsum/{name}"] / per_token for name in _TOKEN_WEIGHTED if f"wsum/{name}" in total},
        "loss": total.get("loss_sum", 0.0) / hp.ppo_epochs,
        "grad_norm": train["grad_norm"],
        "zero_advantage_fraction": total["zero_groups"] / max(total["groups"], 1.0),
        "throughput/tokens_per_s": (total["length_sum"] + total["tokens"]) / step_time,
        "time/rollout_s": t1 - t0, "time/reward_s": t2 - t1, "time/train_s": t3 - t2, "time/step_s": step_time,
    }
    if "mismatch_tokens" in total and total["mismatch_tokens"] > 0:
        metrics["rollout/logprob_abs_diff"] = total["mismatch_abs"] / total["mismatch_tokens"]
        metrics["rollout/kl"] = total["mismatch_kl"] / total["mismatch_tokens"]
    if phi_total is not None:
        metrics["train/budget_shortfall"] = float(phi_total - total["tokens"])
    return metrics, plan.deferred


# token-weighted means over everything trained in a step (the loss's own metrics are per micro-batch means)
_TOKEN_WEIGHTED = ("entropy", "kl", "policy/clip_frac", "policy/ratio_mean", "router/load_balance", "router/z_loss")


def _train_on_plan(policy, ref_model, engine, tok, plan, hp: RLHyper, normalisation: str, phi: int | None,
                   loss_scale: float, guard=None) -> dict:
    """PPO epochs x minibatches x token-budgeted micro-batches over this rank's selected responses.

    Minibatch m holds the responses whose place in the global selection order is m mod `minibatches`, so that
    the split does not depend on the number of ranks. Every rank runs the same number of micro-batches (a rank
    with fewer runs empty ones: a forward whose loss is 0), since each backward reduces gradients across ranks
    and ZeRO-3 gathers parameters in every forward. Before the first update, once per step: the reference
    model's log-probs (KL) and, with old_logprobs: recompute, the trainer's own log-probs."""
    import torch

    from ringctl.dist import max_over_ranks, rank_and_world, sum_over_ranks
    from ringctl.train.logprobs import build_training_batch, response_logprobs
    from ringctl.rl.loss import LossCoefficients, k3_kl, policy_loss
    from ringctl.rl.microbatch import pack_micro_batches
    from ringctl.rl.sampling import model_device

    _, world = rank_and_world()
    device = model_device(policy)
    responses, used = plan.responses, plan.tokens_used
    coefs = LossCoefficients(clip_eps=hp.clip_eps, kl_beta=hp.kl_beta, entropy_coef=hp.entropy_coef,
                             load_balance_coef=hp.load_balance_coef, z_loss_coef=hp.z_loss_coef)
    top_k = getattr(policy.config, "num_experts_per_tok", None)
    with_router = top_k is not None and (hp.load_balance_coef > 0 or hp.z_loss_coef > 0)
    share = hp.share_prompt_forward and engine.shares_prompt_forward
    pad = tok.pad_token_id or 0

    # the micro-batch plan, the same number of micro-batches per minibatch on every rank
    minibatches = []
    for mb in range(hp.minibatches):
        idx = [j for j, pos in enumerate(plan.positions) if pos % hp.minibatches == mb]
        micro = [[idx[i] for i in group] for group in pack_micro_batches(
            [len(responses[j].prompt_ids) for j in idx], [used[j] for j in idx], hp.max_tokens_per_micro_batch)]
        count = max_over_ranks(len(micro)) if world > 1 else len(micro)
        mb_tokens, mb_responses = sum(used[j] for j in idx), len(idx)
        if world > 1 and loss_scale != 1.0:  # a global loss: shares are of the minibatch over all ranks
            total = sum_over_ranks({"tokens": float(mb_tokens), "responses": float(mb_responses)})
            mb_tokens, mb_responses = int(total["tokens"]), int(total["responses"])
        minibatches.append((micro + [[]] * (count - len(micro)), mb_tokens, mb_responses))

    # under ZeRO-3 every rank must call every module as often as the others: the output head runs once per chunk
    # of response tokens, so each micro-batch uses the largest chunk count over the ranks
    lockstep = getattr(engine, "zero_stage", 0) == 3 and world > 1
    chunk_plan: dict[tuple[int, int], int] = {}
    if lockstep:
        from ringctl.train.logprobs import head_chunks

        for mb, (micro, _, _) in enumerate(minibatches):
            for u, group in enumerate(micro):
                tokens = sum(used[j] for j in group) if group else 1
                chunk_plan[mb, u] = max_over_ranks(head_chunks(policy, tokens, hp.logprob_chunk_tokens))

    def batch_of(group: list[int]):
        if not group:  # an empty micro-batch: one padding token through the model, loss 0
            return build_training_batch([[pad]], [[pad]], [1], pad_id=pad).to(device)
        return build_training_batch([responses[j].prompt_ids for j in group], [responses[j].response_ids for j in group],
                                    [used[j] for j in group], pad_id=pad).to(device)

    def per_token(group: list[int], width: int, values) -> torch.Tensor:
        out = torch.zeros(len(group), width, device=device)
        for row, j in enumerate(group):
            n = min(used[j], width)
            out[row, :n] = values(responses[j])[:n].to(device)
        return out

    def slices(group: list[int], tensor: torch.Tensor) -> list[torch.Tensor]:
        return [tensor[row, :used[j]].detach().float().cpu() for row, j in enumerate(group)]

    sums: dict[str, float] = {}

    def add(key: str, value: float) -> None:
        sums[key] = sums.get(key, 0.0) + float(value)

    # once per step, before any update: reference log-probs and (recompute) the trainer's old log-probs
    need_ref = ref_model is not None and hp.kl_beta > 0
    if need_ref or hp.old_logprobs == "recompute":
        policy.eval()
        with torch.no_grad():
            for mb, (micro, _, _) in enumerate(minibatches):
                for u, group in enumerate(micro):
                    batch = batch_of(group)
                    if need_ref:
                        ref = response_logprobs(ref_model, batch, hp.temperature, with_entropy=False,
                                                share_prompts=share, chunk_tokens=hp.logprob_chunk_tokens,
                                                min_chunks=chunk_plan.get((mb, u), 0))["logprobs"]
                        for j, lp in zip(group, slices(group, ref)):
                            responses[j].ref_logprobs = lp
                    if hp.old_logprobs == "recompute":
                        cur = response_logprobs(engine.model, batch, hp.temperature, with_entropy=False,
                                                share_prompts=share, chunk_tokens=hp.logprob_chunk_tokens,
                                                min_chunks=chunk_plan.get((mb, u), 0))["logprobs"]
                        for j, lp in zip(group, slices(group, cur)):
                            responses[j].trainer_old_logprobs = lp
                            rollout_lp = responses[j].old_logprobs[:len(lp)]
                            add("mismatch_abs", (lp - rollout_lp).abs().sum())
                            add("mismatch_kl", k3_kl(rollout_lp, lp).sum())
                            add("mismatch_tokens", len(lp))

    policy.train()
    grad_norms = []
    for epoch in range(hp.ppo_epochs):
        for mb, (micro, mb_tokens, mb_responses) in enumerate(minibatches):
            if not micro:
                continue  # nothing selected for this minibatch on any rank: no optimizer step anywhere
            mb_loss = 0.0  # this rank's share of the update's loss, for the non-finite check before the update
            for u, group in enumerate(micro):
                last = u == len(micro) - 1
                batch = batch_of(group)
                width = batch.response_ids.shape[1]
                # the entropy is logged always, differentiated only when the loss uses it
                out = response_logprobs(engine.model, batch, hp.temperature, with_entropy=True,
                                        entropy_grad=hp.entropy_coef > 0, chunk_tokens=hp.logprob_chunk_tokens,
                                        min_chunks=chunk_plan.get((mb, u), 0),
                                        output_router_logits=with_router, share_prompts=share)
                if not group:  # the same forward and backward as a real micro-batch (ZeRO-3 traces them), weight 0
                    loss = out["logprobs"].sum() * 0.0
                    for layer in out["router_logits"] or ():
                        loss = loss + layer.sum() * 0.0
                    mb_loss += float(loss.detach())
                    grad_norm = engine.accumulate(loss, last=last,
                                                  check=guard.check(mb_loss) if guard and last else None)
                    if grad_norm is not None:
                        grad_norms.append(grad_norm)
                    continue
                recomputed = hp.old_logprobs == "recompute"
                old = per_token(group, width, (lambda r: r.trainer_old_logprobs) if recomputed
                                else (lambda r: r.old_logprobs))
                ref = per_token(group, width, lambda r: r.ref_logprobs) if need_ref else None
                is_weights = None
                if hp.tis_cap is not None:
                    rollout_lp = per_token(group, width, lambda r: r.old_logprobs)
                    is_weights = torch.exp(old - rollout_lp).clamp(max=hp.tis_cap)
                micro_tokens = sum(used[j] for j in group)
                loss, m = policy_loss(out["logprobs"], old, torch.tensor([responses[j].advantage for j in group],
                                                                         device=device),
                                      batch.loss_mask, normalisation=normalisation, token_budget=phi, coefs=coefs,
                                      ref_logprobs=ref, entropy=out["entropy"], router_logits=out["router_logits"],
                                      router_token_mask=out["router_token_mask"],
                                      router_top_k=top_k if out["router_logits"] else None,
                                      router_weight=micro_tokens / mb_tokens, is_weights=is_weights)
                if normalisation == "per_response":  # mean over the minibatch's responses on all ranks
                    loss = loss * len(group) / mb_responses
                loss = guard.inject(loss) if guard else loss
                mb_loss += float(loss.detach())
                grad_norm = engine.accumulate(loss * loss_scale, last=last,
                                              check=guard.check(mb_loss) if guard and last else None)
                if grad_norm is not None:
                    grad_norms.append(grad_norm)
                add("loss_sum", float(loss.detach()))
                if epoch == 0:
                    for name in _TOKEN_WEIGHTED:
                        if name in m:
                            add(f"wsum/{name}", m[name] * micro_tokens)
                    add("metric_tokens", micro_tokens)
                    if mb == 0 and not recomputed:  # policy == pi_old here: the rollout/trainer mismatch
                        with torch.no_grad():
                            mask = batch.loss_mask.to(old.dtype)
                            cur = out["logprobs"].detach()
                            add("mismatch_abs", ((cur - old).abs() * mask).sum())
                            add("mismatch_kl", (k3_kl(old, cur) * mask).sum())
                            add("mismatch_tokens", mask.sum())
    return {"sums": sums, "grad_norm": float(sum(grad_norms) / max(len(grad_norms), 1))}


# ----------------------------------------------------------------------------------------------------------------
# the stage
# ----------------------------------------------------------------------------------------------------------------

def _engine(policy, recipe, hp: RLHyper, steps: int, world_size: int = 1):
    from ringctl.train.engine import OptimSpec, build_engine

    spec = OptimSpec(lr=hp.lr, weight_decay=hp.weight_decay, warmup_steps=hp.warmup_steps,
                     total_steps=steps * hp.ppo_epochs * hp.minibatches, schedule="constant",
                     max_grad_norm=hp.max_grad_norm, micro_batches=1)
    return build_engine(policy, spec, getattr(recipe, "backends", None), world_size)


def _reference_model(recipe, init_path, policy):
    """The frozen reference policy: a copy of the starting policy, or under DeepSpeed ZeRO-3 the checkpoint loaded
    partitioned again and wrapped by a DeepSpeed engine without optimizer (its forward gathers the parameters,
    so no rank holds the whole reference model either)."""
    from ringctl.rl.sampling import frozen_copy
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


def _save_hf(engine, tok, target: Path, is_main: bool) -> None:
    """Hugging Face weights, renamed into place when complete."""
    from ringctl.train.checkpoint import save_hf_checkpoint
    from ringctl.train.engine import barrier

    save_hf_checkpoint(engine, tok, target, is_main, barrier)


def _reward_router(cfg: Config, ctx, device):
    """The stage's reward sources; each reward model loaded once, on this rank's device (under ZeRO-3 partitioned
    over the ranks like the policy, through a DeepSpeed engine without optimizer)."""
    from ringctl.rewards.rm_scorer import RewardModelScorer
    from ringctl.rewards.sources import RewardMixer
    from ringctl.train.engine import deepspeed_config
    from ringctl.train.models import zero3_enabled

    backends = ctx.recipe.backends
    ds_config = deepspeed_config(backends.deepspeed) if zero3_enabled(backends) else None
    dtype = "bfloat16" if ctx.recipe.model.dtype == "bfloat16" else None
    models = {src.name: RewardModelScorer(ctx.input(src.model), device=device, max_length=src.max_length,
                                          batch_tokens=src.batch_tokens, strip_thinking=src.strip_thinking,
                                          template=src.template, dtype=dtype, deepspeed_config=ds_config)
              for src in cfg.rewards if src.type == "reward_model"}
    return RewardMixer(cfg.rewards, cfg.aggregation, models, reward_workers=cfg.reward_workers,
                        reward_timeout_s=cfg.reward_timeout_s)


def _state_file(rank: int) -> str:
    return STATE_FILE if rank == 0 else f"rl_state.rank{rank}.pt"


def run(cfg: Config, ctx) -> dict:
    import torch

    from ringctl.pipeline.context import Artifact
    from ringctl.rewards.sources import uncovered_problem
    from ringctl.rl.sampling import build_rollout_engine, evaluate
    from ringctl.train import determinism
    from ringctl.train.device import dist_backend, rank_device
    from ringctl.train.engine import barrier, init_distributed
    from ringctl.train.models import is_zero3_partitioned, load_model_and_tokenizer
    from ringctl.train.numerics import NonFiniteGuard

    # -- setup --------------------------------------------------------------------------------------------------
    determinism.seed_everything(ctx.seed, ctx.deterministic)
    # the prompts first: a domain that no reward source scores is an error before any model is loaded
    records = load_prompts(ctx.input(cfg.prompts), cfg.domains)
    if cfg.eval_prompts is not None:
        train_records = records
        heldout = [r for ref in cfg.eval_refs for r in load_prompts(ctx.input(ref), cfg.domains)[:cfg.eval_prompts_count]]
    else:
        train_records, heldout = split_heldout(records, cfg.heldout_fraction, ctx.seed)
        heldout = heldout[:cfg.eval_prompts_count]
    problem = uncovered_problem(cfg.rewards, sorted({r["domain"] for r in train_records + heldout}))
    if problem:
        raise ValueError(f"stage {ctx.stage_name}: {problem}")
    device = rank_device(ctx.recipe.resources.device, ctx.local_rank, train_backend=ctx.recipe.backends.train)
    if ctx.recipe.backends.train == "torch":
        init_distributed(dist_backend(device))
    # under ZeRO-3 the policy is built partitioned (no rank holds it whole) and the engine wraps it as it is
    policy, tok = load_model_and_tokenizer(ctx.recipe.model, path=ctx.input(cfg.init), backends=ctx.recipe.backends)
    if not is_zero3_partitioned(policy):  # zero.Init already placed the partitions on this rank's device
        policy.to(device)
    # not built at all when kl_beta is 0; under ZeRO-3 partitioned like the policy
    ref_model = _reference_model(ctx.recipe, ctx.input(cfg.init), policy) if cfg.kl_beta > 0 else None
    engine = _engine(policy, ctx.recipe, cfg, cfg.steps, ctx.world_size)
    guard = NonFiniteGuard(ctx.stage_name, cfg.on_nonfinite)
    rollout_engine = build_rollout_engine(policy, tok, ctx.recipe, ctx.input(cfg.init))
    router = _reward_router(cfg, ctx, device)
    # every rank draws the same L prompts per step and samples its own block of them (rl_step)
    sampler = PromptSampler(train_records, ctx.seed)
    deferred: list = []
    step = 0
    ckpt_root = ctx.outputs_dir / "checkpoints"

    state_dir = ctx.resume_state()
    if state_dir is not None:
        head = torch.load(state_dir / STATE_FILE, weights_only=False)
        saved_world = head.get(KEY_WORLD, 1)
        if saved_world != ctx.world_size:
            raise RuntimeError(
                f"the RL state in {state_dir} was saved by {saved_world} rank(s) but this run has {ctx.world_size}: "
                f"deferred responses, sampling RNG and optimizer shards are per rank, so a resume needs the same "
                f"world size (set the stage's launch.nproc_per_node x nnodes back to {saved_world})")
        state = head if ctx.rank == 0 else torch.load(state_dir / _state_file(ctx.rank), weights_only=False)
        step, deferred = head[KEY_STEP], state[KEY_DEFERRED]
        guard.skipped = state.get(KEY_SKIPPED, 0)
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
        if ctx.is_main:
            print(f"[rl] resumed at step {step}/{cfg.steps}", flush=True)

    def save_state() -> None:
        rng = determinism.get_rng_state()
        with ctx.save_state_shared(f"step-{step:06d}", barrier) as d:
            engine.save_state(d / "engine")
            # each rank its own file: its deferred responses and RNG streams (the sampler is the same everywhere)
            torch.save({KEY_STEP: step, KEY_WORLD: ctx.world_size, KEY_SAMPLER: sampler.state(),
                        KEY_DEFERRED: deferred, KEY_RNG: rng, KEY_SKIPPED: guard.skipped}, d / _state_file(ctx.rank))

    # -- train loop -----------------------------------------------------------------------------------------------
    if step == 0 and heldout:
        ctx.tracker.log_metrics(0, **evaluate(policy, tok, rollout_engine, heldout, cfg, cfg.eval_samples,
                                              ctx.seed + 7, router))
    warned_shortfall = False
    while step < cfg.steps:
        records_step = sampler.next(cfg.prompts_per_step)
        metrics, deferred = rl_step(policy, ref_model, engine, tok, rollout_engine, records_step, cfg,
                                    deferred, step_seed=ctx.seed * 100_003 + step, world_size=ctx.world_size,
                                    router=router, guard=guard.at(step + 1))
        step += 1
        ctx.heartbeat()
        if step % cfg.eval_every == 0 or step == cfg.steps:
            metrics.update(evaluate(policy, tok, rollout_engine, heldout, cfg, cfg.eval_samples, ctx.seed + 7, router))
        metrics["lr"] = engine.lr()
        metrics.update(guard.metrics())
        ctx.tracker.log_metrics(step, **metrics)
        if ctx.is_main:
            if metrics.get("train/budget_shortfall", 0) > 0 and not warned_shortfall:
                warned_shortfall = True
                print(f"[rl] warning: step {step} trained {metrics['train/tokens']:.0f} tokens, "
                      f"{metrics['train/budget_shortfall']:.0f} short of the token budget (the rollouts held "
                      f"fewer tokens); train/budget_shortfall logs it every step, this warning shows once",
                      flush=True)
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
    from ringctl.rl.sampling import build_rollout_engine, frozen_copy

    policy = frozen_copy(model, trainable=True)
    engine = _engine(policy, None, hp, steps)
    rollout_engine = build_rollout_engine(policy, tok, None)
    ref = frozen_copy(model) if hp.kl_beta > 0 else None
    sampler = PromptSampler(prompts, seed)
    tokens, deferred = 0, []
    for s in range(steps):
        m, deferred = rl_step(policy, ref, engine, tok, rollout_engine, sampler.next(hp.prompts_per_step), hp,
                              deferred, step_seed=seed * 100_003 + s)
        tokens += int(m["train/tokens"])
    return eval_fn(policy, rollout_engine), tokens


