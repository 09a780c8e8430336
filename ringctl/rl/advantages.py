"""Group-normalised advantages (GRPO / C3PO step 1).

For the K responses of one prompt with rewards R_1..R_K:

    A_i = (R_i - mean(R)) / (std(R) + eps)

computed over the whole group, BEFORE the token-budget cut (Ring-lite §3.2, C3PO's step 1): a response that is later
cut still took part in its group's mean and std. Groups whose rewards are all equal carry no learning signal;
they get advantage 0 and are counted (`zero_variance_groups`), which the RL stage logs.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import torch

from ringctl.rl.budget import ScoredResponse

StdKind = Literal["population", "sample"]


@dataclass(frozen=True)
class GroupAdvantages:
    advantages: torch.Tensor  # [num_prompts, K], float32
    zero_variance_groups: int  # groups whose rewards were all equal (advantage 0 for all their responses)
    num_groups: int


def group_advantages(rewards: torch.Tensor, *, std: StdKind = "population", eps: float = 1e-6) -> GroupAdvantages:
    """A_i = (R_i - mean_group) / (std_group + eps) for rewards shaped [num_prompts, K].

    std="population" divides the squared deviations by K (numpy's default, what the paper's formula reads as);
    std="sample" divides by K - 1 (torch.std's default, what TRL's GRPO uses). A group counts as zero-variance
    when max == min (exactly equal rewards); its advantages are exactly 0. With std="sample" and K == 1 every
    group is zero-variance (the sample std is undefined).
    """
    if rewards.dim() != 2:
        raise ValueError(f"rewards must be [num_prompts, K], got shape {tuple(rewards.shape)}")
    rewards = rewards.to(torch.float32)
    k = rewards.shape[1]
    mean = rewards.mean(dim=1, keepdim=True)
    if std == "population":
        group_std = rewards.std(dim=1, keepdim=True, correction=0)
    elif std == "sample":
        group_std = rewards.std(dim=1, keepdim=True, correction=1) if k > 1 else torch.zeros_like(mean)
    else:
        raise ValueError(f"std must be 'population' or 'sample', got {std!r}")
    constant = (rewards.max(dim=1).values == rewards.min(dim=1).values) | (k == 1 and std == "sample")
    advantages = (rewards - mean) / (group_std + eps)
    advantages = torch.where(constant.unsqueeze(1), torch.zeros_like(advantages), advantages)
    return GroupAdvantages(advantages=advantages, zero_variance_groups=int(constant.sum()), num_groups=rewards.shape[0])


def score_rollouts(rollouts: Sequence[Any], rewards: Sequence[float], samples_per_prompt: int, *,
                   std: StdKind = "population", eps: float = 1e-6,
                   prompt_ids_offset: int = 0) -> tuple[list[ScoredResponse], GroupAdvantages]:
    """Rollouts (ordered prompt by prompt, K each, as RolloutEngine.generate returns them) + their rewards ->
    ScoredResponses carrying the group advantage and the sampling log-probs as old log-probs.

    prompt_ids_offset shifts Rollout.prompt_index (an index into one generate() call) to a dataset-wide id.
    """
    if len(rollouts) != len(rewards):
        raise ValueError(f"{len(rollouts)} rollouts but {len(rewards)} rewards")
    if len(rollouts) % samples_per_prompt:
        raise ValueError(f"{len(rollouts)} rollouts are not whole groups of {samples_per_prompt}")
    groups = group_advantages(torch.tensor(list(rewards), dtype=torch.float32).view(-1, samples_per_prompt),
                              std=std, eps=eps)
    flat = groups.advantages.flatten().tolist()
    scored = [ScoredResponse(prompt_index=r.prompt_index + prompt_ids_offset, prompt_ids=list(r.prompt_ids),
                             response_ids=list(r.response_ids),
                             old_logprobs=torch.tensor(r.logprobs, dtype=torch.float32), advantage=a,
                             reward=float(reward), finished=r.finished)
              for r, reward, a in zip(rollouts, rewards, flat, strict=True)]
    return scored, groups
