"""Config of the reasoning RL stage (kept apart from stages/rl.py so validation never imports torch)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, model_validator

from ringctl.recipe.base import StageConfig, StageRef
from ringctl.rl.hyper import RLHyper


class Config(StageConfig, RLHyper):
    kind: Literal["rl"] = "rl"
    init: StageRef = Field(..., description="checkpoint to start from, e.g. select.checkpoint or sft.final")
    prompts: StageRef = Field(..., description="RL prompts with references, e.g. filter.rl_reasoning")
    eval_prompts: StageRef | None = Field(None, description="held-out prompts; default: a held-out slice")
    heldout_fraction: float = Field(0.1, ge=0, lt=1, description="held out of `prompts` when no eval_prompts")
    domains: list[str] | None = Field(None, description="only prompts of these domains (default: all)")
    steps: int = Field(100, ge=1)
    save_every: int = Field(10, ge=1, description="resumable state + HF weights every N steps")
    eval_every: int = Field(10, ge=1)
    eval_prompts_count: int = Field(64, ge=1)
    eval_samples: int = Field(1, ge=1)

    @model_validator(mode="after")
    def _check(self) -> Config:
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
        return problems

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
