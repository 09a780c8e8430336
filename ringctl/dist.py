"""Data parallelism for RL: which prompts a rank owns, and the few collectives a step needs (all on objects or
small float sums, so that the same code runs on gloo and NCCL and as one process without a process group).

A step's L prompts are split over the ranks by prompt, in contiguous blocks (rank r owns prompts
[r L / W, (r + 1) L / W)), so that a group of K responses never straddles ranks and the concatenation of the
ranks' blocks in rank order is the single-process order: the global C3PO fill and the sampling seeds (one per
global rollout row) then reproduce the single-process step exactly.
"""

from __future__ import annotations

from typing import Any


def rank_and_world() -> tuple[int, int]:
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def shard_bounds(n: int, rank: int, world: int) -> tuple[int, int]:
    """[lo, hi) of the items rank `rank` owns out of n (contiguous blocks, sizes differ by at most one)."""
    if not 0 <= rank < world:
        raise ValueError(f"rank {rank} outside world size {world}")
    return rank * n // world, (rank + 1) * n // world


def all_gather_objects(obj: Any) -> list[Any]:
    """[obj of rank 0, obj of rank 1, ...] on every rank ([obj] without a process group)."""
    import torch.distributed as dist

    rank, world = rank_and_world()
    if world == 1:
        return [obj]
    out: list[Any] = [None] * world
    dist.all_gather_object(out, obj)
    return out


def sum_over_ranks(values: dict[str, float]) -> dict[str, float]:
    """Key-wise sum over ranks (float64 on the CPU side); a key missing on a rank counts 0 there."""
    gathered = all_gather_objects(values)
    return {k: float(sum(g.get(k, 0.0) for g in gathered)) for k in sorted({k for g in gathered for k in g})}


def max_over_ranks(value: int) -> int:
    return max(all_gather_objects(int(value)))
