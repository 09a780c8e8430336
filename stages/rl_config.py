"""Config of the reasoning RL stage (kept apart from stages/rl.py so validation never imports torch)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, model_validator

from ringctl.recipe.base import StageConfig, StageRef, Strict


class RLHyper(Strict):
    """Everything that shapes one RL step. Defaults are the paper's (Ring-lite §3.2, METHOD.md); the tiny
    recipe scales them down. Also used by select_sft's short C3PO probe."""

    algorithm: Literal["c3po", "grpo"] = Field("c3po", description="grpo: sample-level batches, 1/|y| per response")
    prompts_per_step: int = Field(512, ge=1, description="L: prompts sampled per step")
    samples_per_prompt: int = Field(16, ge=1, description="K: responses per prompt (the advantage group)")
    token_budget: int = Field(409_600, ge=1, description="phi: tokens that enter the loss per optimizer step")
    budget_scope: Literal["per_rank", "global"] = "per_rank"
    leftover: Literal["discard", "defer"] = Field("discard", description="responses after the budget cut")
    fill_order: Literal["prompt", "informative_first"] = Field(
        "prompt", description="order the budget is filled in: prompt by prompt (the paper), or the groups whose "
        "rewards differ first (prompt order kept within each kind), so that groups with zero advantage only fill "
        "what is left of phi")
    ppo_epochs: int = Field(1, ge=1)
    minibatches: int = Field(1, ge=1, description="optimizer steps per PPO epoch over the selected responses")
    lr: float = Field(3e-6, gt=0)
    warmup_steps: int = Field(0, ge=0)
    weight_decay: float = Field(0.0, ge=0)
    max_grad_norm: float = Field(1.0, gt=0)
    clip_eps: float = Field(0.2, gt=0, lt=1)
    kl_beta: float = Field(1e-3, ge=0, description="0: no reference model is built")
    entropy_coef: float = Field(5e-4, ge=0)
    load_balance_coef: float = Field(1e-5, ge=0)
    z_loss_coef: float = Field(1e-7, ge=0)
    temperature: float = Field(1.0, gt=0)
    top_p: float = Field(1.0, gt=0, le=1)
    max_new_tokens: int = Field(24_576, ge=1)
    max_prompt_tokens: int = Field(2048, ge=1)
    share_prompt_forward: bool = Field(True, description="training forward runs each prompt once for its K "
                                       "responses (KV cache reuse); the torch engine only, DeepSpeed uses full rows")
    reward_workers: int = Field(2, ge=1)
    reward_timeout_s: float = Field(10.0, gt=0)


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
        if (self.prompts_per_step * self.samples_per_prompt) % world_size:
            problems.append(f"prompts_per_step x samples_per_prompt = {self.prompts_per_step * self.samples_per_prompt}"
                            f" rollouts is not divisible by the world size {world_size}")
        if self.budget_scope == "global" and self.token_budget % world_size:
            problems.append(f"global token_budget {self.token_budget} is not divisible by the world size {world_size}")
        return problems

    def preflight(self, recipe: Any, world_size: int) -> list[dict]:
        rollouts = self.prompts_per_step * self.samples_per_prompt
        per_rank_budget = self.token_budget if self.budget_scope == "per_rank" else self.token_budget // world_size
        return [
            {"check": "rollouts divisible by world size", "ok": rollouts % world_size == 0,
             "detail": f"{rollouts} rollouts / {world_size} ranks"},
            {"check": "token budget >= longest response", "ok": per_rank_budget >= self.max_new_tokens,
             "detail": f"budget per rank {per_rank_budget:,} vs max_new_tokens {self.max_new_tokens:,}"},
            {"check": "budget reachable by a rollout batch",
             "ok": rollouts * self.max_new_tokens >= per_rank_budget * (world_size if self.budget_scope ==
                                                                        "per_rank" else 1),
             "detail": f"at most {rollouts * self.max_new_tokens:,} response tokens per step"},
        ]
