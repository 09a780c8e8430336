"""The stage runtime: what every training stage (sft, rl, reward_model) sets up and saves the same way.

    rt = StageRuntime(ctx, "rl")             # seeds, this rank's device, the process group (torch backend)
    rt.place(model)                          # onto the device (not a ZeRO-3 partitioned model: already placed)
    state = rt.resume(STATE_FILE)            # the latest resumable state, world size checked
    rt.save_state(tag, engine, payload)      # every rank: engine shards + this rank's payload, atomically
    rt.save_hf(engine, tok, target)          # a Hugging Face checkpoint, whole or not at all (chaos point)
    train, held = split_heldout(n, fraction, seed)   # the one held-out rule
    join_ranks(ctx)                          # select_sft, evaluate: the device and process group, nothing else

`ctx` is the stage's ringctl.pipeline.context.StageContext (only its attributes are used here).
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any


def split_heldout(n: int, fraction: float, seed: int) -> tuple[list[int], list[int]]:
    """(train, held-out) indices, both in index order: a permutation of 0..n-1 drawn from `seed`, its first
    round(n x fraction) held out (at least one when the fraction is positive, at most n - 1). A stage derives `seed`
    from the run's seed; stages with the same data and seed hold out the same items."""
    order = list(range(n))
    random.Random(seed).shuffle(order)
    n_held = 0 if fraction <= 0 or n == 0 else n if fraction >= 1 else min(max(1, round(n * fraction)), n - 1)
    return sorted(order[n_held:]), sorted(order[:n_held])


def join_ranks(ctx: Any) -> Any:
    """A stage that samples data-parallel without training (select_sft, evaluate), launched over one or more ranks:
    this rank's device and the process group (gloo on CPU, nccl on GPU) whatever backends.train is (a DeepSpeed
    stage's engine would otherwise start it). Returns the device."""
    from ringctl.train.device import dist_backend, rank_device
    from ringctl.train.engine import init_distributed

    device = rank_device(ctx.recipe.resources.device, ctx.local_rank)
    init_distributed(dist_backend(device))
    return device


@dataclass
class ResumeState:
    """A resumable state read back: its directory, rank 0's payload (`head`: the step counters) and this rank's."""

    directory: Path
    head: dict
    mine: dict


class StageRuntime:
    def __init__(self, ctx: Any, name: str):
        from ringctl.train import determinism
        from ringctl.train.device import dist_backend, rank_device
        from ringctl.train.engine import init_distributed

        self.ctx, self.name = ctx, name
        determinism.seed_everything(ctx.seed, ctx.deterministic)
        backends = ctx.recipe.backends
        self.device = rank_device(ctx.recipe.resources.device, ctx.local_rank, train_backend=backends.train)
        if backends.train == "torch":
            init_distributed(dist_backend(self.device))

    @property
    def is_main(self) -> bool:
        return self.ctx.is_main

    def log(self, message: str) -> None:
        """A progress line from rank 0, prefixed with the stage kind."""
        if self.ctx.is_main:
            print(f"[{self.name}] {message}", flush=True)

    def place(self, model: Any) -> Any:
        """The model on this rank's device; a model built partitioned by ZeRO-3 (zero.Init) already is."""
        from ringctl.train.models import is_zero3_partitioned

        if not is_zero3_partitioned(model):
            model.to(self.device)
        return model

    # -- resumable state ----------------------------------------------------------------------------------------
    def state_file(self, name: str, per_rank: bool) -> str:
        """`name` for rank 0; with per-rank payloads `<stem>.rank<k><suffix>` for the others."""
        rank = self.ctx.rank
        if not per_rank or rank == 0:
            return name
        stem, dot, suffix = name.partition(".")
        return f"{stem}.rank{rank}{dot}{suffix}"

    def resume(self, name: str, *, per_rank: bool = False, same_world: bool = False) -> ResumeState | None:
        """The latest complete state (None: a fresh start). Rank 0's payload is read by every rank; with `per_rank`
        each rank also reads its own. `same_world`: a state saved by another number of ranks is an error naming
        both (per-rank RNG streams, deferred work and optimizer shards do not carry over)."""
        import torch

        directory = self.ctx.resume_state()
        if directory is None:
            return None
        head = torch.load(directory / name, weights_only=False)
        saved_world = head.get("world_size", 1)
        if same_world and saved_world != self.ctx.world_size:
            raise RuntimeError(
                f"the {self.name} state in {directory} was saved by {saved_world} rank(s) but this run has "
                f"{self.ctx.world_size}: per-rank state (RNG streams, deferred responses, optimizer shards) does not "
                f"carry over, so a resume needs the same world size (set the stage's launch.nproc_per_node x nnodes "
                f"back to {saved_world})")
        mine = head if not per_rank or self.ctx.rank == 0 else torch.load(
            directory / self.state_file(name, per_rank), weights_only=False)
        return ResumeState(directory, head, mine)

    def save_state(self, tag: str, engine: Any, name: str, payload: dict, *, per_rank: bool = False) -> None:
        """Every rank: the engine's state (DeepSpeed writes its shards) and the payload (rank 0's only, or each
        rank's own file with `per_rank`) into one state directory that becomes complete atomically."""
        import torch

        from ringctl.train.engine import barrier

        with self.ctx.save_state_shared(tag, barrier) as d:
            engine.save_state(d / "engine")
            if per_rank or self.ctx.is_main:
                torch.save({**payload, "world_size": self.ctx.world_size}, d / self.state_file(name, per_rank))

    # -- outputs --------------------------------------------------------------------------------------------------
    def save_hf(self, engine: Any, tok: Any, target: Path, files: dict[str, str] | None = None) -> Path:
        """Every rank (ZeRO shards are gathered): a Hugging Face checkpoint renamed into place when complete; the
        rename is the chaos harness's `outputs-write` point."""
        from ringctl.train.checkpoint import save_hf_checkpoint
        from ringctl.train.engine import barrier

        return save_hf_checkpoint(engine, tok, target, self.ctx.is_main, barrier, files=files,
                                  kill_point="outputs-write")
