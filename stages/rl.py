"""rl: reasoning RL with C3PO (or the GRPO baseline), from a chosen SFT checkpoint; general RL with reward models.

    ringctl run recipes/tiny.yaml            # filter -> sft -> select -> reasoning_rl

Set-up (prompts, the policy and its engines, the reward sources) -> resume if a state exists -> `steps` RL steps
(ringctl/rl/trainer.py: sample, score, advantages, C3PO selection, update; Ring-lite §3.2) with held-out pass@1
every `eval_every` steps -> Hugging Face weights and the resumable state (optimizer, RNG incl. sampling, prompt
sampler position, deferred rollouts, step) every `save_every` steps, at the end and on SIGTERM.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from ringctl.recipe.base import StageRef
from ringctl.rewards.sources import Aggregation, RewardModelSource, RewardSource, VerifierSource, uncovered_problem
from ringctl.rl.hyper import RLHyper
from ringctl.train.config import TrainingStageConfig

KIND = "rl"
OUTPUTS = ("final", "checkpoints")
STATE_FILE = "rl_state.pt"  # one per rank (deferred responses and RNG streams are per rank): rl_state.rank<k>.pt


class Config(TrainingStageConfig, RLHyper):
    kind: Literal["rl"] = "rl"
    init: StageRef = Field(..., description="checkpoint to start from, e.g. select.checkpoint or sft.final")
    prompts: StageRef = Field(..., description="RL prompts with references, e.g. filter.rl_reasoning")
    eval_prompts: list[StageRef] | None = Field(
        None, description="held-out prompts (one output or several, e.g. reasoning and general prompts, so that "
        "eval/reward/<domain> shows each); default: a held-out slice of `prompts`")
    heldout_fraction: float = Field(0.1, ge=0, lt=1, description="held out of `prompts` when no eval_prompts")
    domains: list[str] | None = Field(None, description="only prompts of these domains (default: all)")
    steps: int = Field(100, ge=1)
    save_every: int = Field(10, ge=1, description="resumable state + HF weights every N steps")
    eval_every: int = Field(10, ge=1)
    eval_prompts_count: int = Field(64, ge=1, description="held-out prompts evaluated, at most this many from "
                                    "each eval_prompts output")
    eval_samples: int = Field(1, ge=1)
    rewards: list[RewardSource] = Field(
        default_factory=lambda: [VerifierSource()], min_length=1,
        description="reward sources, routed by the record's domain (ringctl/rewards/sources.py)")
    aggregation: Aggregation = Field(
        "sum_then_normalize", description="sum_then_normalize: the weighted sum of raw scores is normalised per "
        "group; normalize_then_sum: each source is normalised per group first (sources of different scales)")

    @field_validator("eval_prompts", mode="before")
    @classmethod
    def _one_or_several(cls, value: Any) -> Any:
        return [value] if isinstance(value, str) else value

    @property
    def eval_refs(self) -> list[StageRef]:
        return list(self.eval_prompts or [])

    @model_validator(mode="after")
    def _check(self) -> Config:
        names = [src.name for src in self.rewards]
        if len(set(names)) != len(names):
            raise ValueError(f"reward source names must be unique (set `name:`): {names}")
        if self.algorithm == "c3po" and self.token_budget < self.max_new_tokens:
            raise ValueError(f"token_budget ({self.token_budget}) must be at least max_new_tokens "
                             f"({self.max_new_tokens}): the longest response must fit in one step's budget")
        return self

    def validate_for(self, recipe: Any, world_size: int) -> list[str]:
        problems = []
        if self.prompts_per_step % world_size:
            problems.append(f"prompts_per_step {self.prompts_per_step} is not divisible by the world size "
                            f"{world_size}: the step's prompts are split over the ranks by prompt (a group of "
                            f"samples_per_prompt responses never straddles ranks)")
        if self.budget_scope == "global" and self.token_budget % world_size:
            problems.append(f"global token_budget {self.token_budget} is not divisible by the world size {world_size}")
        if recipe.backends.rollout == "vllm" and self.top_p < 1:
            problems.append((("top_p",), f"top_p {self.top_p} with backends.rollout: vllm: vLLM's sampling log-probs are "
                             f"those of the top-p truncated distribution, the trainer's are not (pi_old would be "
                             f"wrong); RL with vLLM samples with top_p: 1 (the paper's setting)"))
        problems += self._reward_problems(recipe)
        return problems

    def _reward_problems(self, recipe: Any) -> list:
        """Reward models must be reward_model stages' `model` outputs; when the recipe tells which domains the
        prompts have (synthetic data, or `domains:`), every one of them needs a reward source."""
        problems: list = []
        stages = recipe.stages
        for i, src in enumerate(self.rewards):
            if not isinstance(src, RewardModelSource) or src.model.stage not in stages:
                continue
            upstream = stages[src.model.stage]
            if not upstream.is_reward_model(src.model.output):
                what = f"the {src.model.output!r} output of a {upstream.kind} stage"
                problems.append((("rewards", i, "model"),
                                 f"{src.model} is {what}, not a reward model: a reward source needs a reward_model "
                                 f"stage's model output (e.g. {{type: reward_model, model: <rm stage>.model}})"))
                continue
            if src.template == "chat":
                problem = upstream.chat_template_problem(src.model.output)
                if problem:
                    problems.append((("rewards", i, "model"), f"{problem} (this reward source reads responses "
                                     f"through the RM's chat template; set template: plain to format "
                                     f"'prompt\\n\\nresponse' instead)"))
        domains = self.known_domains(recipe)
        if domains is not None:
            problem = uncovered_problem(self.rewards, sorted(domains))
            if problem:
                problems.append((("rewards",), problem))
        return problems

    def known_domains(self, recipe: Any) -> set[str] | None:
        """Domains of the training and held-out prompts when the recipe determines them (a data_filter stage
        made of synthetic sources says which domains each split holds); `domains:` narrows them; None: unknown
        until the data is read."""
        found: set[str] = set()
        for ref in [self.prompts, *self.eval_refs]:
            upstream = recipe.stages.get(ref.stage)
            domains = upstream.declared_domains(ref.output, recipe) if upstream is not None else None
            if domains is None:
                return set(self.domains) if self.domains is not None else None
            found |= domains
        return found & set(self.domains) if self.domains is not None else found

    def scored_domains(self) -> list[str] | None:
        """The rewards score the prompts' domains (`domains:` narrows them)."""
        return self.domains

    def sequence_need(self) -> tuple[str, int] | None:
        return "max_prompt_tokens + max_new_tokens", self.max_prompt_tokens + self.max_new_tokens

    def memory_workload(self, recipe: Any, world_size: int) -> dict | None:
        return {**self.micro_batch_workload(world_size), "rollout": True, "fields": ["max_tokens_per_micro_batch"]}

    def preflight(self, recipe: Any, world_size: int) -> list[dict]:
        rollouts = self.prompts_per_step * self.samples_per_prompt
        step_budget = self.token_budget * (world_size if self.budget_scope == "per_rank" else 1)
        return [
            {"check": "prompts divisible by world size", "ok": self.prompts_per_step % world_size == 0,
             "detail": f"{self.prompts_per_step} prompts ({rollouts} rollouts) / {world_size} ranks"},
            {"check": "token budget >= longest response", "ok": self.token_budget >= self.max_new_tokens,
             "detail": f"budget {self.token_budget:,} ({self.budget_scope}) vs max_new_tokens "
                       f"{self.max_new_tokens:,}"},
            {"check": "budget reachable by a rollout batch", "ok": rollouts * self.max_new_tokens >= step_budget,
             "detail": f"at most {rollouts * self.max_new_tokens:,} response tokens per step vs "
                       f"{step_budget:,} in the loss"},
        ]


def _prompts(cfg: Config, ctx) -> tuple[list[dict], list[dict]]:
    """(training prompts, held-out prompts): `eval_prompts` when given, else a held-out slice of `prompts`; a
    domain that no reward source scores is an error before any model is loaded."""
    from ringctl.rewards.sources import uncovered_problem
    from ringctl.rl.prompts import load_prompts
    from ringctl.train.runtime import split_heldout

    records = load_prompts(ctx.input(cfg.prompts), cfg.domains)
    if cfg.eval_prompts is not None:
        train = records
        heldout = [r for ref in cfg.eval_refs for r in load_prompts(ctx.input(ref), cfg.domains)[:cfg.eval_prompts_count]]
    else:
        train_idx, held_idx = split_heldout(len(records), cfg.heldout_fraction, ctx.seed)
        train, heldout = [records[i] for i in train_idx], [records[i] for i in held_idx][:cfg.eval_prompts_count]
    problem = uncovered_problem(cfg.rewards, sorted({r["domain"] for r in train + heldout}))
    if problem:
        raise ValueError(f"stage {ctx.stage_name}: {problem}")
    return train, heldout


def run(cfg: Config, ctx) -> dict:
    from ringctl.pipeline.context import Artifact
    from ringctl.rewards.sources import build_reward_mixer
    from ringctl.rl.heldout import heldout_reward
    from ringctl.rl.prompts import PromptSampler
    from ringctl.rl.trainer import RLTrainer, load_policy
    from ringctl.train import determinism
    from ringctl.train.numerics import NonFiniteGuard
    from ringctl.train.runtime import StageRuntime

    # -- set-up ---------------------------------------------------------------------------------------------------
    train_records, heldout = _prompts(cfg, ctx)
    rt = StageRuntime(ctx, "rl")
    recipe, init = ctx.recipe, ctx.input(cfg.init)
    # the policy (under ZeRO-3 built partitioned: no rank holds it whole), its rollout engine (vLLM starts first,
    # while its share of the device is free, then sleeps until used), the frozen reference (none when kl_beta is 0)
    # and the optimizer engine over the stage's ranks; select_sft's probe sets up the same way
    policy, tok, rollout_engine, ref_model, train_engine = load_policy(recipe, init, cfg, cfg.steps, rt.device,
                                                                       ctx.world_size, cfg.checkpointing(recipe))
    guard = NonFiniteGuard(ctx.stage_name, cfg.on_nonfinite)
    rewards = build_reward_mixer(cfg.rewards, cfg.aggregation, {src.name: ctx.input(src.model) for src in cfg.rewards
                                                               if src.type == "reward_model"},
                                 device=rt.device, recipe=recipe, reward_workers=cfg.reward_workers,
                                 reward_timeout_s=cfg.reward_timeout_s)
    trainer = RLTrainer(policy, tok, train_engine, rollout_engine, cfg, ref_model=ref_model, rewards=rewards)
    sampler = PromptSampler(train_records, ctx.seed)  # every rank draws the same prompts, samples its block
    step, deferred = 0, []
    ckpt_root = ctx.outputs_dir / "checkpoints"

    def outputs() -> dict:
        final = ckpt_root / f"step-{step:06d}"
        return {"final": Artifact(final, {"step": step}), "checkpoints": Artifact(ckpt_root)}

    state = rt.resume(STATE_FILE, per_rank=True, same_world=True)
    if state is not None:
        step, deferred, guard.skipped = state.head["step"], state.mine["deferred"], state.mine.get("skipped_steps", 0)
        sampler.load(state.mine["sampler"])
        train_engine.load_state(state.directory / "engine")
        determinism.set_rng_state(state.mine["rng"])
        ctx.tracker.rewind(step)
        if step >= cfg.steps:  # killed after the last state, before returning: only the outputs are left
            return _finished_outputs(outputs(), step, cfg.steps)
        rt.log(f"resumed at step {step}/{cfg.steps}")

    def save_state() -> None:
        rt.save_state(f"step-{step:06d}", train_engine, STATE_FILE, {
            "step": step, "sampler": sampler.state(), "deferred": deferred, "rng": determinism.get_rng_state(),
            "skipped_steps": guard.skipped}, per_rank=True)

    def evaluate_heldout() -> dict:
        return heldout_reward(policy, tok, rollout_engine, heldout, cfg, cfg.eval_samples, ctx.seed + 7, rewards)

    # -- train loop -----------------------------------------------------------------------------------------------
    if step == 0 and heldout:
        ctx.tracker.log_metrics(0, **evaluate_heldout())
    warned = False
    while step < cfg.steps:
        metrics, deferred = trainer.step(sampler.next(cfg.prompts_per_step), deferred,
                                         step_seed=ctx.seed * 100_003 + step, guard=guard.at(step + 1))
        step += 1
        ctx.heartbeat()
        if step % cfg.eval_every == 0 or step == cfg.steps:
            metrics.update(evaluate_heldout())
        metrics.update(lr=train_engine.lr(), **guard.metrics())
        ctx.tracker.log_metrics(step, **metrics)
        warned = _progress(rt, step, cfg.steps, metrics, warned)
        if step % cfg.save_every == 0 or step == cfg.steps:
            rt.save_hf(train_engine, tok, ckpt_root / f"step-{step:06d}")
            save_state()
        elif ctx.should_stop():
            save_state()
        if ctx.should_stop() and step < cfg.steps:
            return {}
    return outputs()


def _finished_outputs(outputs: dict, step: int, steps: int) -> dict:
    final = outputs["final"].path
    if not (final / "config.json").is_file():
        raise RuntimeError(f"resume at step {step} of {steps} would do zero steps but {final} is missing")
    return outputs


def _progress(rt, step: int, steps: int, metrics: dict, warned_shortfall: bool) -> bool:
    """The step's line; the first step that trained fewer tokens than the budget gets a warning (once)."""
    if metrics.get("train/budget_shortfall", 0) > 0 and not warned_shortfall:
        warned_shortfall = True
        rt.log(f"warning: step {step} trained {metrics['train/tokens']:.0f} tokens, "
               f"{metrics['train/budget_shortfall']:.0f} short of the token budget (the rollouts held fewer "
               f"tokens); train/budget_shortfall logs it every step, this warning shows once")
    rt.log(f"step {step}/{steps} reward {metrics['reward/mean']:.3f} tokens {metrics['train/tokens']:.0f} "
           f"{metrics['time/step_s']:.2f}s")
    return warned_shortfall
