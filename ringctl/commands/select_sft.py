"""`ringctl select-sft`: the SFT checkpoint choice of a run, re-ranked from its stored measurements or measured
now (a run still going, or plain checkpoint directories). The measurement is ringctl.selection's, the one the
select_sft stage runs."""

from __future__ import annotations

from pathlib import Path

KIND = "select_sft"


def select_sft(*, run_id, metric, sft_stage, checkpoints, prompts, workdir,
               limits: dict[str, int] | None = None) -> tuple[dict, tuple[float, float]]:
    """`ringctl select-sft`: re-rank a run's stored measurements, or measure now (running runs, plain dirs).
    Returns (the selection report, the entropy band).

    Plain directories are measured with the recipe defaults (`ringctl.recipe.schema.RecipeBase`: the tiny model
    settings, seed 0, `resources.device: auto`) and the select_sft stage's default Config; `limits` (num_prompts,
    samples_per_prompt, max_new_tokens: the CLI's options) override the measurement's size."""
    from ringctl import artifacts, selection
    from ringctl.errors import BadInput
    from ringctl.pipeline.state import RESOLVED_RECIPE, RunState, find_run_dir
    from ringctl.recipe.loader import load_resolved
    from ringctl.recipe.registry import load_stage_module

    Config = load_stage_module(KIND).Config  # noqa: N806  (the stage's schema, through the registry)
    recipe, cfg, prompts_path = None, None, prompts
    if run_id:
        run_dir = find_run_dir(workdir, run_id)
        state = RunState.load(run_dir)
        recipe = load_resolved((run_dir / RESOLVED_RECIPE).read_text(), str(run_dir / RESOLVED_RECIPE)).recipe
        sel = [n for n, c in recipe.stages.items() if c.kind == KIND]
        if sel:
            cfg = recipe.stages[sel[0]]
            st = state.stage(sel[0])
            report = Path(st["outputs"].get("report", "")) if st["outputs"] else None
            if report and report.exists() and not checkpoints:
                stored = artifacts.read_json(report)
                cands = [selection.Candidate(**{k: c[k] for k in ("checkpoint", "epoch", "sft_tokens", "entropy",
                                                                   "accuracy", "rl_tokens", "reward_gain")})
                         for c in stored["candidates"]]
                band = tuple(stored.get("entropy_band", cfg.entropy_band))
                return selection.report(cands, selection.choose(cands, metric, band), metric), band
            producer = state.stage(cfg.prompts.stage)
            if prompts_path is None and producer["outputs"].get(cfg.prompts.output):
                prompts_path = Path(producer["outputs"][cfg.prompts.output])
        if not checkpoints:
            if sft_stage not in state.data["stages"]:
                raise BadInput(f"run {run_id} has no stage {sft_stage!r}; stages: {', '.join(state.data['order'])}")
            sft_dir = run_dir / sft_stage / "outputs" / "checkpoints"
            if state.stage(sft_stage)["outputs"].get("checkpoints"):
                sft_dir = Path(state.stage(sft_stage)["outputs"]["checkpoints"])
            checkpoints = selection.epoch_checkpoints(sft_dir)
            if not checkpoints:
                raise BadInput(f"run {run_id}: no epoch checkpoints yet under {sft_dir}")
    if recipe is None:
        from ringctl.recipe.schema import RecipeBase

        recipe = RecipeBase(name="select-sft")
    if cfg is None:
        cfg = Config(checkpoints="sft.checkpoints", prompts="filter.rl_reasoning")
    cfg = Config.model_validate({**cfg.model_dump(), **{k: v for k, v in (limits or {}).items() if v is not None}})
    if prompts_path is None:
        raise BadInput("no RL prompts to measure on: pass --prompts FILE.jsonl (records with prompt/answer/domain)")
    if not Path(prompts_path).is_file():
        raise BadInput(f"--prompts {prompts_path}: no such file")
    ckpts = [Path(c) for c in checkpoints]
    missing = [str(c) for c in ckpts if not Path(c).is_dir()]
    if missing:
        raise BadInput(f"not a checkpoint directory: {', '.join(missing)}")
    from ringctl.train.checkpoint import EPOCH_INFO

    no_info = [str(c) for c in ckpts if not (c / EPOCH_INFO).is_file()]
    if no_info:
        raise BadInput(f"not an SFT epoch checkpoint (no {EPOCH_INFO} with its epoch and cumulative sft_tokens): "
                       f"{', '.join(no_info)}")
    prompts_list = selection.probe_prompts(Path(prompts_path), cfg.num_prompts, recipe.seed)
    cands = selection.measure(ckpts, prompts_list, cfg, recipe, seed=recipe.seed)
    band = tuple(cfg.entropy_band)
    return selection.report(cands, selection.choose(cands, metric, band), metric), band
