"""select_sft: choose the SFT epoch checkpoint that RL starts from, by token efficiency (paper §4.3).

    ringctl select-sft --metric token-efficiency --run <run-id>     # the same measurement, from the CLI

For every epoch checkpoint of the SFT stage:
  sft_tokens   cumulative SFT training tokens (written by the SFT stage next to each checkpoint)
  entropy      mean token entropy of the checkpoint's own samples on RL prompts
  accuracy     probe pass@1: mean verifier reward over `samples_per_prompt` samples per probe prompt
  reward_gain  (probe_steps > 0) accuracy after a short C3PO probe minus before; rl_tokens = tokens it trained on
  token_efficiency = rl_tokens / sft_tokens
then `ringctl.selection.choose` applies the rule documented there and in the README.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import Field, field_validator

from ringctl.recipe.base import StageConfig, StageRef
from ringctl.rl.hyper import RLHyper

KIND = "select_sft"
OUTPUTS = ("checkpoint", "report")
REPORT = "selection.json"


class ProbeConfig(RLHyper):
    """The short C3PO probe: a few RL steps from each candidate (defaults sized for a probe, not a run)."""

    prompts_per_step: int = 8
    samples_per_prompt: int = 4
    token_budget: int = 4096
    max_new_tokens: int = 256
    lr: float = 1e-5


class Config(StageConfig):
    kind: Literal["select_sft"] = "select_sft"
    checkpoints: StageRef = Field(..., description="the SFT stage's epoch checkpoints, e.g. sft.checkpoints")
    prompts: StageRef = Field(..., description="RL prompts with references, e.g. filter.rl_reasoning")
    metric: Literal["token-efficiency", "entropy", "accuracy", "reward-gain"] = "token-efficiency"
    entropy_band: tuple[float, float] = (0.3, 0.5)
    num_prompts: int = Field(64, ge=1, description="probe prompts (a fixed, seeded subset of `prompts`)")
    samples_per_prompt: int = Field(4, ge=1, description="samples per probe prompt (pass@1 over n)")
    max_new_tokens: int = Field(1024, ge=1)
    temperature: float = Field(1.0, gt=0)
    top_p: float = Field(1.0, gt=0, le=1)
    probe_steps: int = Field(0, ge=0, description="short C3PO probe per candidate (0: no probe)")
    probe: ProbeConfig = Field(default_factory=ProbeConfig)

    @field_validator("entropy_band")
    @classmethod
    def _band(cls, v):
        if not 0 <= v[0] <= v[1]:
            raise ValueError(f"entropy_band must be [lo, hi] with 0 <= lo <= hi, got {list(v)}")
        return v

    def passes_model_through(self) -> bool:
        """The chosen checkpoint is one of the upstream SFT stage's."""
        return True

    def scored_domains(self) -> list[str] | None:
        """The probe scores the prompts of every domain with the verifiers."""
        return None


def epoch_checkpoints(root: Path) -> list[Path]:
    """Epoch checkpoint directories under `root` (epoch-1, epoch-2, ...), in epoch order."""
    root = Path(root)
    dirs = [p for p in root.iterdir() if p.is_dir() and p.name.startswith("epoch-")] if root.exists() else []
    return sorted(dirs, key=lambda p: int(p.name.split("-")[1]))


def checkpoint_info(ckpt: Path) -> dict:
    from ringctl.train.checkpoint import read_epoch_info

    return read_epoch_info(ckpt)


def measure(ckpts: list[Path], prompts: list[dict], cfg: Config, recipe: Any, tracker=None, seed: int = 0):
    """Measure every candidate; returns a list of ringctl.selection.Candidate."""
    import torch

    from ringctl.rl.sampling import build_rollout_engine, sample_and_score
    from ringctl.selection import Candidate
    from ringctl.train.device import rank_device
    from ringctl.train.models import load_model_and_tokenizer, mean_token_entropy
    from stages.rl import run_probe

    # probe sampling uses the stage's settings; the probe's RL steps use `probe`
    hp = cfg.probe.model_copy(update={"temperature": cfg.temperature, "top_p": cfg.top_p,
                                      "max_new_tokens": cfg.max_new_tokens})
    candidates = []
    for ckpt in ckpts:
        info = checkpoint_info(ckpt)
        torch.manual_seed(seed)
        model, tok = load_model_and_tokenizer(recipe.model, path=ckpt)
        model.to(rank_device(recipe.resources.device))
        engine = build_rollout_engine(model, tok, None)
        rollouts, rewards = sample_and_score(model, tok, engine, prompts, hp, cfg.samples_per_prompt, seed)
        entropy = mean_token_entropy(model, [r.prompt_ids for r in rollouts], [r.response_ids for r in rollouts],
                                     pad_id=tok.pad_token_id)
        accuracy = sum(rewards) / max(len(rewards), 1)
        gain, rl_tokens = None, 0
        if cfg.probe_steps:
            def accuracy_after(policy, probe_engine, tok=tok):
                _, after = sample_and_score(policy, tok, probe_engine, prompts, hp, cfg.samples_per_prompt, seed)
                return sum(after) / max(len(after), 1)

            after, rl_tokens = run_probe(model, tok, prompts, cfg.probe, cfg.probe_steps, seed, accuracy_after)
            gain = after - accuracy
        cand = Candidate(checkpoint=str(ckpt), epoch=int(info["epoch"]), sft_tokens=int(info["sft_tokens"]),
                         entropy=float(entropy), accuracy=float(accuracy), rl_tokens=int(rl_tokens),
                         reward_gain=gain)
        candidates.append(cand)
        print(f"[select] epoch {cand.epoch}: entropy {cand.entropy:.3f} accuracy {cand.accuracy:.3f}"
              + (f" gain {gain:+.3f}" if gain is not None else ""), flush=True)
        if tracker is not None:
            tracker.log_metrics(cand.epoch, **{"select/entropy": cand.entropy, "select/accuracy": cand.accuracy,
                                               "select/sft_tokens": cand.sft_tokens,
                                               "select/token_efficiency": cand.token_efficiency,
                                               "select/reward_gain": cand.reward_gain})
    return candidates


def probe_prompts(path: Path, n: int, seed: int) -> list[dict]:
    import random

    from ringctl.data.records import iter_jsonl

    records = list(iter_jsonl(path))
    if not records:
        raise ValueError(f"no RL prompts in {path}")
    rng = random.Random(seed)
    rng.shuffle(records)
    return records[:n]


def run(cfg: Config, ctx) -> dict:
    from ringctl import artifacts, selection
    from ringctl.pipeline.context import Artifact

    ckpts = epoch_checkpoints(ctx.input(cfg.checkpoints))
    if not ckpts:
        raise RuntimeError(f"no epoch checkpoints under {ctx.input(cfg.checkpoints)}")
    prompts = probe_prompts(ctx.input(cfg.prompts), cfg.num_prompts, ctx.seed)
    candidates = measure(ckpts, prompts, cfg, ctx.recipe, tracker=ctx.tracker, seed=ctx.seed)
    chosen = selection.choose(candidates, cfg.metric, tuple(cfg.entropy_band))
    doc = selection.report(candidates, chosen, cfg.metric)
    doc["entropy_band"] = list(cfg.entropy_band)
    report_path = ctx.outputs_dir / REPORT
    artifacts.atomic_write_json(report_path, doc)
    plot = selection.plot(doc, ctx.stage_dir / "selection.png")
    ctx.tracker.log_artifact(plot)
    ctx.tracker.log_artifact(report_path)
    ctx.tracker.set_tag("ringctl.selected_checkpoint", chosen.checkpoint)
    from ringctl.display import write_summary

    write_summary(ctx.stage_dir, selection.table(doc, tuple(cfg.entropy_band)))  # the table for the terminal
    return {"checkpoint": Artifact(Path(chosen.checkpoint), {"epoch": chosen.epoch}),
            "report": Artifact(report_path)}


def select_for_cli(*, run_id, metric, sft_stage, checkpoints, prompts, workdir, tracking_uri,
                   limits: dict[str, int] | None = None):
    """`ringctl select-sft`: re-rank a run's stored measurements, or measure now (running runs, plain dirs).

    Plain directories are measured with the recipe defaults (`ringctl.recipe.schema.RecipeBase`: the tiny model
    settings, seed 0, `resources.device: auto`) and this stage's default Config; `limits` (num_prompts,
    samples_per_prompt, max_new_tokens: the CLI's options) override the measurement's size."""
    from ringctl import artifacts, selection
    from ringctl.errors import BadInput
    from ringctl.pipeline.state import RESOLVED_RECIPE, RunState, find_run_dir
    from ringctl.recipe.loader import load_resolved

    del tracking_uri
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
            checkpoints = epoch_checkpoints(sft_dir)
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
    prompts_list = probe_prompts(Path(prompts_path), cfg.num_prompts, recipe.seed)
    cands = measure(ckpts, prompts_list, cfg, recipe, seed=recipe.seed)
    band = tuple(cfg.entropy_band)
    return selection.report(cands, selection.choose(cands, metric, band), metric), band
