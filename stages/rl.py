"""rl: reasoning RL with C3PO (or the GRPO baseline), from a chosen SFT checkpoint; general RL with reward models.

    ringctl run recipes/tiny.yaml            # filter -> sft -> select -> reasoning_rl

Set-up (prompts, the policy and its engines, the reward sources) -> resume if a state exists -> `steps` RL steps
(ringctl/rl/trainer.py: sample, score, advantages, C3PO selection, update; Ring-lite §3.2) with held-out pass@1
every `eval_every` steps -> Hugging Face weights and the resumable state (optimizer, RNG incl. sampling, prompt
sampler position, deferred rollouts, step) every `save_every` steps, at the end and on SIGTERM.
"""

from __future__ import annotations

from stages.rl_config import Config, RLHyper  # noqa: F401  (Config is the stage's schema)

KIND = "rl"
OUTPUTS = ("final", "checkpoints")
STATE_FILE = "rl_state.pt"  # one per rank (deferred responses and RNG streams are per rank): rl_state.rank<k>.pt


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
    from ringctl.rl.trainer import RLTrainer, build_train_engine, reference_model
    from ringctl.rollout.generation import build_rollout_engine
    from ringctl.train import determinism
    from ringctl.train.models import load_model_and_tokenizer
    from ringctl.train.numerics import NonFiniteGuard
    from ringctl.train.runtime import StageRuntime

    # -- set-up ---------------------------------------------------------------------------------------------------
    train_records, heldout = _prompts(cfg, ctx)
    rt = StageRuntime(ctx, "rl")
    recipe, init = ctx.recipe, ctx.input(cfg.init)
    # under ZeRO-3 the policy is built partitioned (no rank holds it whole) and the engine wraps it as it is
    policy, tok = load_model_and_tokenizer(recipe.model, path=init, backends=recipe.backends)
    rt.place(policy)
    ref_model = reference_model(recipe, init, policy) if cfg.kl_beta > 0 else None  # none at all when beta is 0
    engine = build_train_engine(policy, recipe.backends, cfg, cfg.steps, ctx.world_size)
    guard = NonFiniteGuard(ctx.stage_name, cfg.on_nonfinite)
    rollout_engine = build_rollout_engine(policy, tok, recipe, init)
    rewards = build_reward_mixer(cfg.rewards, cfg.aggregation, {src.name: ctx.input(src.model) for src in cfg.rewards
                                                               if src.type == "reward_model"},
                                 device=rt.device, recipe=recipe, reward_workers=cfg.reward_workers,
                                 reward_timeout_s=cfg.reward_timeout_s)
    trainer = RLTrainer(policy, tok, engine, rollout_engine, cfg, ref_model=ref_model, rewards=rewards)
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
        engine.load_state(state.directory / "engine")
        determinism.set_rng_state(state.mine["rng"])
        ctx.tracker.rewind(step)
        if step >= cfg.steps:  # killed after the last state, before returning: only the outputs are left
            return _finished_outputs(outputs(), step, cfg.steps)
        rt.log(f"resumed at step {step}/{cfg.steps}")

    def save_state() -> None:
        rt.save_state(f"step-{step:06d}", engine, STATE_FILE, {
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
        metrics.update(lr=engine.lr(), **guard.metrics())
        ctx.tracker.log_metrics(step, **metrics)
        warned = _progress(rt, step, cfg.steps, metrics, warned)
        if step % cfg.save_every == 0 or step == cfg.steps:
            rt.save_hf(engine, tok, ckpt_root / f"step-{step:06d}")
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
