"""Held-out evaluation during RL: pass@1 over n samples per held-out prompt, sharded over the ranks."""

from __future__ import annotations

from ringctl.rl.hyper import RLHyper
from ringctl.stats import mean_and_stderr


def heldout_reward(policy, tok, rollout_engine, records: list[dict], hp: RLHyper, n: int, seed: int,
                   rewards=None) -> dict[str, float]:
    """Held-out pass@1 over n samples per prompt: `eval/reward` (mean over prompts of each prompt's mean reward),
    `eval/reward_stderr` (standard error over prompts, so that a change can be judged against its noise) and
    `eval/reward/<domain>` per domain (with `eval/reward_stderr/<domain>` when there are several); rewards from
    `rewards` (the stage's RewardMixer; default: the verifiers). Under data parallelism every rank samples its
    block of the prompts (seeds per global row, so the figures equal one process's) and every rank gets the same
    result."""
    from ringctl.dist import all_gather_objects, rank_and_world, shard_bounds
    from ringctl.rewards.sources import RewardMixer
    from ringctl.rollout.generation import sample

    if not records:
        return {"eval/reward": float("nan")}
    rank, world = rank_and_world()
    lo, hi = shard_bounds(len(records), rank, world)
    mine = records[lo:hi]
    means_here: list[float] = []
    rollouts = sample(policy, tok, rollout_engine, mine, hp, n, seed, row_offset=lo * n, total_rows=len(records) * n,
                      logprobs=False)
    if mine:
        mixer = rewards or RewardMixer.verifiers(hp.reward_workers, hp.reward_timeout_s)
        rewards_logged = mixer.score(tok, mine, rollouts, n).logged
        per_prompt: dict[int, list[float]] = {}
        for r, rew in zip(rollouts, rewards_logged, strict=True):
            per_prompt.setdefault(r.prompt_index, []).append(rew)
        means_here = [sum(v) / len(v) for _, v in sorted(per_prompt.items())]
    means = [m for block in all_gather_objects(means_here) for m in block]
    mean, stderr = mean_and_stderr(means)
    out = {"eval/reward": mean, "eval/reward_stderr": stderr}
    by_domain: dict[str, list[float]] = {}
    for i, m in enumerate(means):
        by_domain.setdefault(records[i]["domain"], []).append(m)
    for d, v in by_domain.items():
        out[f"eval/reward/{d}"], domain_stderr = mean_and_stderr(v)
        if len(by_domain) > 1:  # with one domain these equal eval/reward and eval/reward_stderr
            out[f"eval/reward_stderr/{d}"] = domain_stderr
    return out

