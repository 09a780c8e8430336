"""The shipped recipes validate and plan on a CPU machine without downloading anything."""

from __future__ import annotations

import pytest

from tests.conftest import REPO, benchmarks_dir
from tests.helpers import ringctl, ringctl_json

RECIPES = ["tiny.yaml", "filter-demo.yaml", "ring-lite-2507.yaml"]


@pytest.mark.parametrize("name", RECIPES)
def test_shipped_recipe_validates(name, tmp_path):
    # the full-scale recipe's data and hostfile exist only on the cluster
    skip = ["--skip-input-check"] if name == "ring-lite-2507.yaml" else []
    env = {"RINGCTL_BENCHMARKS_DIR": str(benchmarks_dir())}  # filter-demo reads them (validate checks they exist)
    proc, doc = ringctl_json("validate", REPO / "recipes" / name, *skip, cwd=tmp_path, env=env)
    assert proc.returncode == 0 and doc["valid"], proc.stdout + proc.stderr


def test_ring_lite_without_its_data_lists_every_missing_path(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    env = {"RING_DATA": str(empty), "RINGCTL_BENCHMARKS_DIR": str(empty)}
    proc, doc = ringctl_json("validate", REPO / "recipes" / "ring-lite-2507.yaml", cwd=tmp_path, env=env)
    assert proc.returncode == 2 and not doc["valid"]
    errors = {e["path"]: e for e in doc["errors"]}
    # 6 data files, 5 benchmark files, the hostfile, the reward model directory and (HF_HUB_OFFLINE=1) the hub
    # model; each with its recipe line
    assert len(errors) == 14
    assert all(e["file"].endswith("ring-lite-2507.yaml") and e["line"] for e in errors.values())
    assert "does not exist" in errors["stages.filter.sources[2].path"]["message"]
    assert "rl_code.jsonl" in errors["stages.filter.sources[2].path"]["message"]
    assert "humaneval.jsonl.gz" in errors["stages.filter.steps[6].benchmarks[4]"]["message"]
    assert "/etc/ringctl/hostfile" in errors["resources.hostfile"]["message"]
    assert "inclusionAI/Ling-lite-1.5 (HF_HUB_OFFLINE is set" in errors["model.name_or_path"]["message"]
    assert "Skywork-Reward-V2" in errors["stages.rm.path"]["message"]
    # run: the same list, exit 2, no run directory, no traceback
    proc = ringctl("run", REPO / "recipes" / "ring-lite-2507.yaml", "--workdir", tmp_path / "runs",
                   "--tracking-uri", f"sqlite:///{tmp_path}/m.db", cwd=tmp_path, env=env)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr + proc.stdout
    assert "rl_logic_games.jsonl" in proc.stderr and "14 problems found; nothing was run" in proc.stderr
    assert not (tmp_path / "runs").exists()


def test_ring_lite_plan_on_cpu(tmp_path):
    proc, doc = ringctl_json("plan", REPO / "recipes" / "ring-lite-2507.yaml", "--workdir", tmp_path / "runs",
                             "--skip-input-check", cwd=tmp_path, env={"HF_HUB_OFFLINE": "1"})
    assert proc.returncode == 0, proc.stderr
    assert doc["inputs"]["checked"] is False and "skipped (--skip-input-check)" in doc["inputs"]["detail"]
    # rl_code.jsonl (domain code) reaches the RL stage (and select's probe), HumanEval the evaluate stage: the plan
    # names the sandbox backend
    assert doc["sandbox"]["stages"] == ["select", "reasoning_rl", "general_rl", "evaluate"] and doc["sandbox"]["ok"]
    assert doc["sandbox"]["backend"] in ("bwrap", "unshare")
    stages = {s["name"]: s for s in doc["stages"]}
    assert list(stages) == ["filter", "sft", "select", "reasoning_rl", "rm", "general_rl", "evaluate"]
    for name in ("select", "evaluate"):  # data parallel over every GPU, as the RL stages
        assert stages[name]["world_size"] == 256 and stages[name]["launcher"] == "deepspeed", name
    assert stages["sft"]["world_size"] == 256 and stages["sft"]["launcher"] == "deepspeed"
    assert "--num_nodes=32" in stages["sft"]["launch"][0] and "--hostfile=" in stages["sft"]["launch"][0]
    checks = {(c["stage"], c["check"]): c for c in doc["preflight"]}
    assert all(c["ok"] for c in checks.values())
    assert "16.8B params" in checks[("*", "memory per GPU (model states)")]["detail"]
    assert ("reasoning_rl", "SFT max length covers RL prompt + response") in checks
    assert ("reasoning_rl", "token budget >= longest response") in checks
    assert ("sft", "batch divisible by world size") in checks
    # the memory model per training stage (issue 23): a 32K-token micro-batch fits with activation checkpointing
    for name in ("sft", "reasoning_rl", "general_rl"):
        mem = checks[(name, "memory per GPU")]["memory_gib"]
        assert mem["training"] < 0.9 * 80 and mem["activations"] < 10 and mem["loss_head"] < 4, (name, mem)
    assert checks[("reasoning_rl", "memory per GPU")]["memory_gib"]["rollout"] > 36  # vLLM's 0.45 of 80 GiB
    proc = ringctl("plan", REPO / "recipes" / "ring-lite-2507.yaml", "--skip-input-check", "--workdir",
                   tmp_path / "runs", "stages.sft.activation_checkpointing=false", cwd=tmp_path,
                   env={"HF_HUB_OFFLINE": "1"})
    assert proc.returncode == 2, proc.stderr
    assert "FAIL sft: memory per GPU" in proc.stdout and "set stages.sft.activation_checkpointing: true" in proc.stdout
    assert "pre-flight check(s) failed: sft: memory per GPU" in proc.stderr
    # the selection's cost (issue 24 item 4): tokens and GPU-hours at stated throughputs; the recipe runs a 4-step
    # probe per candidate, trained over the 256 ranks under ZeRO-3 (its micro-batch fits as RL's does)
    cost = checks[("select", "selection cost")]["detail"]
    assert "6 candidate(s)" in cost and "GPU-hours" in cost and "on 256 GPU(s)) at 2000 generated" in cost
    assert "402,653,184 trained" in cost  # 6 candidates x 4 steps x a global budget of 16,777,216 tokens
    mem = checks[("select", "memory per GPU")]
    assert "deepspeed ZeRO-3 over 256 ranks" in mem["detail"] and mem["memory_gib"]["training"] < 0.9 * 80
    assert checks[("select", "probe prompts cover the ranks")]["ok"]
    proc, no_probe = ringctl_json("plan", REPO / "recipes" / "ring-lite-2507.yaml", "--skip-input-check", "--workdir",
                                  tmp_path / "runs", "stages.select.probe_steps=0", cwd=tmp_path,
                                  env={"HF_HUB_OFFLINE": "1"})
    no_probe = {(c["stage"], c["check"]): c for c in no_probe["preflight"]}
    assert "0 trained" in no_probe[("select", "selection cost")]["detail"]
    assert "4 probe steps would" in no_probe[("select", "selection cost")]["detail"]
    assert ("select", "memory per GPU") not in no_probe  # no probe: nothing trained
    # a probe micro-batch that does not fit names the probe's fields, checkpointing off names the probe's switch
    proc = ringctl("plan", REPO / "recipes" / "ring-lite-2507.yaml", "--skip-input-check", "--workdir",
                   tmp_path / "runs", "+stages.select.probe.activation_checkpointing=false",
                   "stages.select.probe.max_tokens_per_micro_batch=131072", cwd=tmp_path, env={"HF_HUB_OFFLINE": "1"})
    assert proc.returncode == 2 and "FAIL select: memory per GPU" in proc.stdout
    line = proc.stdout.split("FAIL select: memory per GPU")[1].split("\n")[0]
    assert "stages.select.probe.activation_checkpointing: true" in line
    assert "stages.select.probe.max_tokens_per_micro_batch" in line
    # a bad override is caught by the pre-flight / cross-field validation before anything runs
    proc = ringctl("validate", REPO / "recipes" / "ring-lite-2507.yaml", "stages.sft.batch_rows=100",
                   "--skip-input-check", cwd=tmp_path)
    assert proc.returncode == 2 and "divisible" in proc.stderr
