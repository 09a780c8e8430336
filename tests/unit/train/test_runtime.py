"""ringctl/train/runtime.py: the held-out rule every stage shares, and the stage runtime's resumable state (saved
and read back through a real StageContext and training engine; the world-size check; per-rank payload files)."""

from __future__ import annotations

import pytest
import torch

from ringctl.pipeline.context import StageContext
from ringctl.recipe.schema import RecipeBase
from ringctl.train.engine import OptimSpec, build_engine
from ringctl.train.runtime import StageRuntime, split_heldout


def test_split_heldout_is_one_seeded_rule():
    train, held = split_heldout(600, 0.1, seed=5)
    assert len(held) == 60 and sorted(train + held) == list(range(600))
    assert train == sorted(train) and held == sorted(held)  # index order, whatever the permutation
    assert split_heldout(600, 0.1, seed=5) == (train, held)  # a function of (n, fraction, seed) only
    assert split_heldout(600, 0.1, seed=6)[1] != held
    assert split_heldout(811, 0.3, seed=0)[1].__len__() == 243  # round(n x fraction)
    assert split_heldout(5, 0.0, 0) == ([0, 1, 2, 3, 4], [])
    assert split_heldout(5, 1.0, 0) == ([], [0, 1, 2, 3, 4])
    assert len(split_heldout(3, 0.01, 0)[1]) == 1  # a positive fraction holds out at least one item...
    assert len(split_heldout(3, 0.99, 0)[0]) == 1  # ...and leaves at least one to train on
    assert split_heldout(0, 0.5, 0) == ([], [])


def _runtime(tmp_path, monkeypatch, rank: int = 0, world: int = 1) -> tuple[StageRuntime, StageContext]:
    monkeypatch.setenv("RANK", str(rank))
    monkeypatch.setenv("WORLD_SIZE", str(world))
    ctx = StageContext.for_test(tmp_path, "rl", recipe=RecipeBase(name="t", resources={"device": "cpu"}), seed=3)
    if world > 1:  # the process group is not started for this test: a one-rank view of a bigger run
        monkeypatch.setattr("ringctl.train.engine.init_distributed", lambda *a, **k: (rank, world))
        monkeypatch.setattr("ringctl.train.engine.barrier", lambda: None)
    return StageRuntime(ctx, "rl"), ctx


def _engine():
    model = torch.nn.Linear(3, 2)
    return build_engine(model, OptimSpec(lr=1e-2, total_steps=4))


def test_state_round_trip_with_the_engine(tmp_path, monkeypatch):
    rt, ctx = _runtime(tmp_path, monkeypatch)
    assert rt.device == torch.device("cpu") and rt.resume("s.pt") is None
    engine = _engine()
    engine.module(torch.ones(1, 3)).sum().backward()
    engine.step()
    rt.save_state("step-000001", engine, "s.pt", {"step": 1, "payload": [1, 2]})
    state = rt.resume("s.pt")
    assert state.directory.name == "step-000001" and state.head["step"] == 1 and state.mine is state.head
    assert state.head["world_size"] == 1
    fresh = _engine()
    fresh.load_state(state.directory / "engine")
    for a, b in zip(fresh.module.parameters(), engine.module.parameters(), strict=True):
        torch.testing.assert_close(a, b)


def test_per_rank_payload_files_and_the_world_size_check(tmp_path, monkeypatch):
    rt, ctx = _runtime(tmp_path, monkeypatch, rank=1, world=2)
    assert rt.state_file("rl_state.pt", per_rank=True) == "rl_state.rank1.pt"
    assert rt.state_file("rl_state.pt", per_rank=False) == "rl_state.pt"
    state = ctx.state_dir / "step-000002"
    state.mkdir(parents=True)
    torch.save({"step": 2, "world_size": 2, "who": 0}, state / "rl_state.pt")
    torch.save({"step": 2, "world_size": 2, "who": 1}, state / "rl_state.rank1.pt")
    (state / "COMPLETE").write_text('{"seq": 1, "tag": "step-000002"}')
    got = rt.resume("rl_state.pt", per_rank=True, same_world=True)
    assert got.head["who"] == 0 and got.mine["who"] == 1
    # the same state read by a run of 3 ranks: refused, naming both sizes
    monkeypatch.setenv("WORLD_SIZE", "3")
    ctx3 = StageContext.for_test(tmp_path, "rl", recipe=ctx.recipe)
    rt.ctx = ctx3
    with pytest.raises(RuntimeError, match=r"saved by 2 rank\(s\) but this run has 3"):
        rt.resume("rl_state.pt", per_rank=True, same_world=True)
    assert rt.resume("rl_state.pt", per_rank=True).head["step"] == 2  # without the check (SFT's state)
