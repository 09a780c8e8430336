"""Everything that shapes one RL step (shared by the rl stage, select_sft's probe and the difficulty filter).

Kept free of torch so that validating a recipe stays fast.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from ringctl.recipe.base import Strict


class RLHyper(Strict):
    """Everything that shapes one RL step. Defaults are the paper's (Ring-lite, arXiv 2506.14731, §3.2); the tiny
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
    max_tokens_per_micro_batch: int | None = Field(
        None, ge=1, description="micro-batches of at most this many tokens (prompt + trained response tokens) per "
        "forward/backward; gradients accumulate to one optimizer step per minibatch; none: one micro-batch")
    old_logprobs: Literal["rollout", "recompute"] = Field(
        "rollout", description="log pi_old: the rollout engine's sampling log-probs, or the trainer's own forward "
        "before the update (costs one extra forward; use it when the rollout engine's numerics differ, e.g. vLLM)")
    tis_cap: float | None = Field(
        None, gt=0, description="truncated importance sampling: weight each token's policy term by "
        "min(pi_trainer_old / pi_rollout, tis_cap) (needs old_logprobs: recompute)")
    max_defer_steps: int = Field(1, ge=1, description="leftover: defer drops a response after waiting this many "
                                 "steps (staleness cap)")
    logprob_chunk_tokens: int | None = Field(
        None, ge=0, description="response tokens per chunk of the output head (bounds the [tokens, vocab] logits "
        "held at once); none: sized so one float32 [chunk, vocab] block holds 2^26 values; 0: the full-vocab path")
    reward_workers: int = Field(2, ge=1)
    reward_timeout_s: float = Field(10.0, gt=0)

    def micro_batch_workload(self, world_size: int) -> dict:
        """The largest training micro-batch for the pre-flight memory model (ringctl.train.memory): tokens through
        the model, response tokens scored by the head. max_tokens_per_micro_batch, or without it the rank's whole
        update (its token budget of response tokens with their prompts); a single response is never split."""
        per_rank = self.token_budget // (world_size if self.budget_scope == "global" else 1)
        longest = self.max_prompt_tokens + self.max_new_tokens
        response_share = self.max_new_tokens / longest
        tokens = max(self.max_tokens_per_micro_batch or int(per_rank / response_share), longest)
        return {"tokens": tokens, "head_tokens": int(tokens * response_share), "entropy_grad": self.entropy_coef > 0,
                "reference": self.kl_beta > 0, "chunk_tokens": self.logprob_chunk_tokens}

    @model_validator(mode="after")
    def _check_hyper(self) -> RLHyper:
        if self.tis_cap is not None and self.old_logprobs != "recompute":
            raise ValueError("tis_cap needs old_logprobs: recompute (the correction weighs the trainer's old "
                             "log-probs against the rollout engine's)")
        return self
