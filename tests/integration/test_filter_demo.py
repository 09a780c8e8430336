"""recipes/filter-demo.yaml end to end through the CLI: run, fully cached rerun, a one-stage change."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.conftest import REPO
from tests.helpers import ringctl_json

RECIPE = REPO / "recipes" / "filter-demo.yaml"


@pytest.mark.slow
def test_filter_demo_runs_caches_and_reruns_only_what_changed(tmp_path, benchmarks):
    env = {"RINGCTL_BENCHMARKS_DIR": str(benchmarks)}
    proc, doc = ringctl_json("run", RECIPE, cwd=tmp_path, env=env)
    assert proc.returncode == 0, proc.stderr
    names = [s["name"] for s in doc["stages"]]
    assert [s["status"] for s in doc["stages"]] == ["completed"] * len(names)
    report = json.loads(Path(doc["stages"][-1]["outputs"]["report"]).read_text())
    assert report["read"] > 0

    proc, again = ringctl_json("run", RECIPE, cwd=tmp_path, env=env)
    assert proc.returncode == 0
    assert [s["status"] for s in again["stages"]] == ["cached"] * len(names)

    # change the decontamination n-gram size: decontam and what depends on it rerun, the rest is cached
    change = "stages.decontam.steps.0.n=10"
    _, plan = ringctl_json("plan", RECIPE, change, cwd=tmp_path, env=env)
    would = {s["name"]: s for s in plan["stages"]}
    assert would["decontam"]["would_run"] and "config steps[0].n: 8 -> 10" in would["decontam"]["reason"]
    assert would["split"]["would_run"] and not would["raw"]["would_run"] and not would["clean"]["would_run"]
    proc, third = ringctl_json("run", RECIPE, change, cwd=tmp_path, env=env)
    status = {s["name"]: s["status"] for s in third["stages"]}
    assert status == {"raw": "cached", "clean": "cached", "decontam": "completed", "split": "completed"}
