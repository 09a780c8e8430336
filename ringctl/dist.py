"""Data parallelism for RL: which prompts a rank owns, and the few collectives a step needs (all on objects or
small float sums, so that the same code runs on gloo and NCCL and as one process without a process group).

A step's L prompts are split over the ranks by prompt, in contiguous blocks (rank r owns prompts
[r L / W, (r + 1) L / W)), so that a group of K responses never straddles ranks and the concatenation of the
ranks' blocks in rank order is the single-process order: the global C3PO fill and the sampling seeds (one per
global rollout row) then reproduce the single-process step exactly. Selection and evaluation split their
prompts the same way (`sampling_share`, `gather_shares`): their tables do not depend on the number of ranks.
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


def sampling_share(n: int, group_size: int = 1) -> tuple[int, int, bool]:
    """(lo, hi, reports) of n items sampled data-parallel: consecutive ranks of `group_size` (a vLLM tensor-parallel
    group: one engine, which must get identical requests) sample one contiguous share [lo, hi) together, and
    `reports` is True on the first rank of each group, the one whose results gather_shares keeps."""
    rank, world = rank_and_world()
    if group_size < 1 or world % group_size:
        raise ValueError(f"{world} ranks do not split into groups of {group_size} (vLLM tensor_parallel_size)")
    lo, hi = shard_bounds(n, rank // group_size, world // group_size)
    return lo, hi, rank % group_size == 0


def gather_shares(items: list, reports: bool = True) -> list:
    """Every rank: the concatenation, in rank order, of the lists of the ranks that report their share (see
    sampling_share), i.e. the single-process list when the shares are contiguous blocks."""
    return [x for part in all_gather_objects(items if reports else None) if part is not None for x in part]
