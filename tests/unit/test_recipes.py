"""The shipped recipes validate and plan on a CPU machine without downloading anything."""

from __future__ import annotations

import pytest

from tests.conftest import REPO
from tests.helpers import ringctl, ringctl_json

RECIPES = ["tiny.yaml", "filter-demo.yaml", "ring-lite-2507.yaml"]


@pytest.mark.parametrize("name", RECIPES)
def test_shipped_recipe_validates(name, tmp_path):
    proc, doc = ringctl_json("validate", REPO / "recipes" / name, cwd=tmp_path)
    assert proc.returncode == 0 and doc["valid"], proc.stdout + proc.stderr


def test_ring_lite_plan_on_cpu(tmp_path):
    proc, doc = ringctl_json("plan", REPO / "recipes" / "ring-lite-2507.yaml", "--workdir", tmp_path / "runs",
                             cwd=tmp_path, env={"HF_HUB_OFFLINE": "1"})
    assert proc.returncode == 0, proc.stderr
    stages = {s["name"]: s for s in doc["stages"]}
    assert list(stages) == ["filter", "sft", "select", "reasoning_rl"]
    assert stages["sft"]["world_size"] == 256 and stages["sft"]["launcher"] == "deepspeed"
    assert "--num_nodes=32" in stages["sft"]["launch"][0] and "--hostfile=" in stages["sft"]["launch"][0]
    checks = {(c["stage"], c["check"]): c for c in doc["preflight"]}
    assert all(c["ok"] for c in checks.values())
    assert "16.8B params" in checks[("*", "memory per GPU (model states)")]["detail"]
    assert ("reasoning_rl", "SFT max length covers RL prompt + response") in checks
    assert ("reasoning_rl", "token budget >= longest response") in checks
    assert ("sft", "batch divisible by world size") in checks
    # a bad override is caught by the pre-flight / cross-field validation before anything runs
    proc = ringctl("validate", REPO / "recipes" / "ring-lite-2507.yaml", "stages.sft.batch_rows=100", cwd=tmp_path)
    assert proc.returncode == 2 and "divisible" in proc.stderr
