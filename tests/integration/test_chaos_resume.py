"""Chaos resume (bench/chaos_resume.py): the tiny pipeline SIGKILLed at random moments (seeded; time offsets and
kill points inside checkpoint, output, manifest and state writes), resumed after each, ends with the uninterrupted
run's metrics and outputs, and no finished stage runs again.

`make test` runs a couple of kills on a shortened recipe (1 SFT epoch, 8 steps of each RL stage, smaller held-out
evaluations and selection, 1 reward-model epoch); `pytest -m chaos` runs 8."""

from __future__ import annotations

import pytest

from bench.chaos_resume import main

SHORT = ["--no-default-overrides", "stages.sft.epochs=1", "stages.reasoning_rl.steps=8",
         "stages.reasoning_rl.save_every=4", "stages.general_rl.steps=8", "stages.general_rl.save_every=4",
         "stages.general_rl.eval_every=8", "stages.reasoning_rl.eval_prompts_count=64",
         "stages.general_rl.eval_prompts_count=32", "stages.rm.epochs=1", "stages.select.num_prompts=24"]


def _check(doc: dict) -> None:
    print({k: doc[k] for k in ("seed", "kills", "reference_s", "chaos_s", "invocations", "launches")})
    for m in doc["moments"]:
        print(f"  {m['describe']}: {m['outcome']}")
    assert doc["completed"], doc["stage_status"]
    assert doc["equal_metrics"], doc["metrics_equal"]
    assert doc["equal_outputs"] and doc["outputs_compared"] > 0
    assert doc["finished_stages_rerun"] == []
    assert doc["ok"] and doc["kills"] >= 1


@pytest.mark.slow
def test_chaos_resume_a_few_kills(tmp_path):
    _check(main(["--kills", "2", "--seed", "5", "--keep", str(tmp_path), *SHORT]))


@pytest.mark.slow
@pytest.mark.chaos
def test_chaos_resume_eight_kills(tmp_path):
    doc = main(["--kills", "8", "--seed", "0", "--keep", str(tmp_path)])
    _check(doc)
    assert doc["kills"] >= 6  # a moment is "not reached" only when its stage finished before it could be armed
