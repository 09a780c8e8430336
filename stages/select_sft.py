"""select_sft: choose the SFT epoch checkpoint that RL starts from, by token efficiency (paper §4.3).

    ringctl select-sft --metric token-efficiency --run <run-id>     # the same measurement, from the CLI

For every epoch checkpoint of the SFT stage:
  sft_tokens   cumulative SFT training tokens (written by the SFT stage next to each checkpoint)
  entropy      mean token entropy of the checkpoint's own samples on RL prompts
  accuracy     probe pass@1: mean verifier reward over `samples_per_prompt` samples per probe prompt
  reward_gain  (probe_steps > 0) accuracy after a short C3PO probe minus before; rl_tokens = tokens it trained on
  token_efficiency = rl_tokens / sft_tokens
then `ringctl.selection.choose` applies the rule documented there and in the README.

Data parallel: launched over W ranks (launch.launcher torchrun / deepspeed), each rank samples its share of the
probe prompts from every checkpoint (seeds per global row), then each candidate's probe trains over all ranks; rank 0
writes the table, which is the same for any W (ringctl.selection.measure).
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
    """The short C3PO probe: a few RL steps from each candidate, trained over the stage's ranks with the recipe's
    training and rollout engines, as the RL stage trains (defaults sized for a probe, not a run)."""

    prompts_per_step: int = 8
    samples_per_prompt: int = 4
    token_budget: int = 4096
    max_new_tokens: int = 256
    lr: float = 1e-5
    budget_scope: Literal["per_rank", "global"] = Field(
        "global", description="global (the default): the probe's token budget is over all ranks, so that its figures "
        "(and the choice) do not depend on how many GPUs the selection runs on; per_rank trains W x token_budget")
    activation_checkpointing: bool | None = Field(
        None, description="recompute activations in the probe's backward; none: backends.activation_checkpointing")

    def checkpointing(self, recipe) -> bool:
        if self.activation_checkpointing is not None:
            return self.activation_checkpointing
        return bool(recipe.backends.activation_checkpointing)


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
    cost_generate_tokens_per_s: float = Field(
        2000.0, gt=0, description="`ringctl plan`'s cost estimate only: generated tokens per second per GPU (an "
        "assumption the plan states; measure your engine, e.g. bench/rollout_engines.py)")
    cost_train_tokens_per_s: float = Field(
        5000.0, gt=0, description="`ringctl plan`'s cost estimate only: probe tokens trained per second per GPU")

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

    def memory_workload(self, recipe: Any, world_size: int) -> dict | None:
        """The probe trains each candidate over the stage's ranks, with the recipe's training engine."""
        if not self.probe_steps:
            return None
        return {**self.probe.micro_batch_workload(world_size), "rollout": True,
                "checkpointing": self.probe.checkpointing(recipe), "checkpointing_field": "probe.activation_checkpointing",
                "fields": ["probe.max_tokens_per_micro_batch", "probe_steps (0: no probe)"]}

    def preflight(self, recipe: Any, world_size: int) -> list[dict]:
        """What the selection costs: generated and trained tokens over every candidate (all epochs of the SFT
        stage: the band is only known at run time), and GPU-hours at the stated throughputs."""
        upstream = recipe.stages.get(self.checkpoints.stage) if recipe is not None else None
        candidates = getattr(upstream, "epochs", None) or 1
        sampled = candidates * self.num_prompts * self.samples_per_prompt * self.max_new_tokens

        def cost(steps: int) -> tuple[int, int, float]:
            p = self.probe
            generated = sampled * (2 if steps else 1)  # a probe is followed by sampling the candidate again
            generated += candidates * steps * p.prompts_per_step * p.samples_per_prompt * p.max_new_tokens
            trained = candidates * steps * p.token_budget * (world_size if p.budget_scope == "per_rank" else 1)
            return generated, trained, (generated / self.cost_generate_tokens_per_s
                                        + trained / self.cost_train_tokens_per_s) / 3600

        generated, trained, hours = cost(self.probe_steps)
        detail = (f"{candidates} candidate(s): up to {generated:,} tokens generated, {trained:,} trained: "
                  f"~{hours:,.1f} GPU-hours (~{hours / world_size:,.2f} h on {world_size} GPU(s)) at "
                  f"{self.cost_generate_tokens_per_s:g} generated / {self.cost_train_tokens_per_s:g} trained "
                  f"tokens/s per GPU (cost_*_tokens_per_s)")
        if not self.probe_steps:
            g4, t4, h4 = cost(4)
            detail += f"; no probe (probe_steps 0): 4 probe steps would make it {g4:,} / {t4:,} tokens, ~{h4:,.1f} GPU-hours"
        checks = [{"check": "selection cost", "ok": True, "detail": detail}]
        if self.probe_steps:  # a rank without a probe prompt would only pad the collectives
            checks.append({"check": "probe prompts cover the ranks", "ok": self.probe.prompts_per_step >= world_size,
                           "detail": f"probe.prompts_per_step {self.probe.prompts_per_step} over {world_size} ranks"})
        return checks


def run(cfg: Config, ctx) -> dict:
    from ringctl import artifacts, selection
    from ringctl.display import write_summary
    from ringctl.pipeline.context import Artifact
    from ringctl.train.runtime import join_ranks

    join_ranks(ctx)
    ckpts = selection.epoch_checkpoints(ctx.input(cfg.checkpoints))
    if not ckpts:
        raise RuntimeError(f"no epoch checkpoints under {ctx.input(cfg.checkpoints)}")
    prompts = selection.probe_prompts(ctx.input(cfg.prompts), cfg.num_prompts, ctx.seed)
    candidates = selection.measure(ckpts, prompts, cfg, ctx.recipe, tracker=ctx.tracker, seed=ctx.seed)
    if not ctx.is_main:
        return {}  # every rank measured; rank 0 writes
    chosen = selection.choose(candidates, cfg.metric, tuple(cfg.entropy_band))
    doc = selection.report(candidates, chosen, cfg.metric)
    doc["entropy_band"] = list(cfg.entropy_band)
    report_path = ctx.outputs_dir / REPORT
    artifacts.atomic_write_json(report_path, doc)
    ctx.tracker.log_artifact(selection.plot(doc, ctx.stage_dir / "selection.png"))
    ctx.tracker.log_artifact(report_path)
    ctx.tracker.set_tag("ringctl.selected_checkpoint", chosen.checkpoint)
    write_summary(ctx.stage_dir, selection.table(doc, tuple(cfg.entropy_band)))  # the table for the terminal
    return {"checkpoint": Artifact(Path(chosen.checkpoint), {"epoch": chosen.epoch}),
            "report": Artifact(report_path)}
