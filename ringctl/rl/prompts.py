"""RL prompts: read from a data stage's output, drawn epoch by epoch in a seeded order.

Every rank draws the same L prompts per step (and samples its own block of them, ringctl/rl/trainer.py); the
sampler's position is part of the RL stage's resumable state.
"""

from __future__ import annotations

import random
from pathlib import Path


class PromptSampler:
    """Epoch-wise shuffled prompts; its position is part of the resumable state."""

    def __init__(self, records: list[dict], seed: int):
        if not records:
            raise ValueError("no RL prompts")
        self.records, self.seed, self.epoch, self.pos = records, seed, 0, 0
        self._order = self._shuffle()

    def _shuffle(self) -> list[int]:
        order = list(range(len(self.records)))
        random.Random(self.seed * 1_000_003 + self.epoch).shuffle(order)
        return order

    def next(self, n: int) -> list[dict]:
        out = []
        while len(out) < n:
            if self.pos == len(self._order):
                self.epoch, self.pos = self.epoch + 1, 0
                self._order = self._shuffle()
            out.append(self.records[self._order[self.pos]])
            self.pos += 1
        return out

    def state(self) -> dict:
        return {"epoch": self.epoch, "pos": self.pos}

    def load(self, state: dict) -> None:
        self.epoch, self.pos = state["epoch"], state["pos"]
        self._order = self._shuffle()


def load_prompts(path: Path, domains: list[str] | None = None) -> list[dict]:
    """The prompt records of `path` (of `domains` only, when given); an error when there are none."""
    from ringctl.data.records import iter_jsonl

    records = [r for r in iter_jsonl(path) if domains is None or r.get("domain") in domains]
    if not records:
        raise ValueError(f"no RL prompts in {path}" + (f" for domains {domains}" if domains else ""))
    return records
