"""Config of the reasoning RL stage (kept apart from stages/rl.py so validation never imports torch)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from ringctl.recipe.base import StageRef
from ringctl.rewards.sources import Aggregation, RewardModelSource, RewardSource, VerifierSource, uncovered_problem
from ringctl.rl.hyper import RLHyper
from ringctl.train.config import TrainingStageConfig


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
