"""The `slurm` launcher and `ringctl submit` against a real Slurm (slurmctld + slurmd + munged started here as root,
tests/local_cluster.py): SFT and RL as 2 ranks through srun give the same metrics as through torchrun; a job
requeued in the middle of RL continues the same run id (no stage finished twice) and ends with the same metrics;
`ringctl submit --dry-run` prints the script and submits nothing. Skipped, with the reason, where Slurm cannot
start (not root, slurm-wlm/munge not installed: `make setup` installs them as root)."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from tests.helpers import ringctl, ringctl_json, wait_for, write
from tests.integration.sft_data import write_arithmetic
from tests.local_cluster import SlurmCluster, running

RECIPE = """
name: slurm-two-ranks
seed: 0
resources: {{device: cpu}}
stages:
  sftdata:
    kind: toy_stages.records
    path: {sft}
  prompts:
    kind: toy_stages.records
    path: {prompts}
  sft:
    kind: sft
    data: sftdata.records
    launch: {{launcher: torchrun, nproc_per_node: 2}}
    epochs: 1
    lr: 3.0e-3
    max_seq_len: 256
    batch_rows: 8
    save_every: 100
    eval_num_prompts: 0
    heldout_fraction: 0.0
  rl:
    kind: rl
    init: sft.final
    prompts: prompts.records
    launch: {{launcher: torchrun, nproc_per_node: 2}}
    steps: {rl_steps}
    save_every: 1
    eval_every: 100
    eval_prompts_count: 4
    heldout_fraction: 0.2
    prompts_per_step: 2
    samples_per_prompt: 4
    token_budget: 64
    budget_scope: global
    leftover: defer
    max_new_tokens: 16
    max_prompt_tokens: 64
    max_tokens_per_micro_batch: 160
    lr: 1.0e-3
    kl_beta: 1.0e-3
    reward_workers: 1
"""

TIMING = ("time/", "throughput/")


def two_rank_recipe(tmp_path: Path, rl_steps: int = 3) -> Path:
    from ringctl.data.records import write_jsonl
    from ringctl.data.synth import generate_rl

    sft = write_arithmetic(tmp_path / "sft.jsonl", n=48)
    prompts = tmp_path / "prompts.jsonl"
    write_jsonl(prompts, [dict(r) for r in generate_rl(24, 0, domains=["arithmetic"])])
    return write(tmp_path / "recipe.yaml", RECIPE.format(sft=sft, prompts=prompts, rl_steps=rl_steps))


def metrics(run_dir: Path, stage: str) -> list[dict]:
    rows = [json.loads(line) for line in (run_dir / stage / "metrics.jsonl").read_text().splitlines()]
    return [{k: v for k, v in r.items() if not k.startswith(TIMING) and not k.endswith("_per_s")} for r in rows]


@pytest.fixture(scope="module")
def slurm(tmp_path_factory):
    with running(SlurmCluster(tmp_path_factory.mktemp("slurm")), "Slurm") as cluster:
        yield cluster


def _job_state(slurm: SlurmCluster, job: str) -> str:
    out = subprocess.run(["squeue", "-h", "-j", job, "-o", "%T"], env={**os.environ, **slurm.env},
                         capture_output=True, text=True, timeout=30)
    return out.stdout.strip()


def _submit(slurm: SlurmCluster, recipe: Path, tmp_path: Path) -> dict:
    proc, doc = ringctl_json("submit", recipe, "--nodes", "1", "--gpus-per-node", "2", "--workdir", tmp_path / "runs",
                             "--tracking-uri", f"sqlite:///{tmp_path / 'mlflow.db'}", cwd=tmp_path, env=slurm.env)
    assert proc.returncode == 0, proc.stderr
    assert doc["job_id"].isdigit() and doc["distributed_stages"] == ["sft", "rl"]
    return doc


def _job_log(tmp_path: Path, doc: dict) -> str:
    return "".join(p.read_text() for p in (tmp_path / "runs" / "slurm").glob(f"{doc['run_id']}-*.log"))


@pytest.fixture(scope="module")
def reference(slurm, tmp_path_factory):
    """The recipe and its run with torchrun (2 ranks), the metrics the Slurm runs must give."""
    tmp = tmp_path_factory.mktemp("reference")
    recipe = two_rank_recipe(tmp)
    proc, doc = ringctl_json("run", recipe, "--workdir", tmp / "ref", cwd=tmp, timeout=600)
    assert proc.returncode == 0, proc.stderr
    return recipe, tmp / "ref" / doc["run_id"]


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_submit_runs_sft_and_rl_through_srun_with_torchrun_metrics(slurm, reference, tmp_path):
    recipe, ref_dir = reference
    doc = _submit(slurm, recipe, tmp_path)
    wait_for(lambda: _job_state(slurm, doc["job_id"]) == "", f"Slurm job {doc['job_id']} to end", 500)
    run_dir = tmp_path / "runs" / doc["run_id"]
    proc, status = ringctl_json("status", doc["run_id"], "--workdir", tmp_path / "runs", cwd=tmp_path)
    assert status["status"] == "completed", _job_log(tmp_path, doc)
    for stage in ("sft", "rl"):
        log = (run_dir / stage / "stage.log").read_text()
        assert " launching: srun --nodes=1 --ntasks=1 --ntasks-per-node=1" in log
        assert "--nproc_per_node=2 --rdzv_backend=c10d --rdzv_endpoint=" + slurm.node + ":" in log
        assert metrics(run_dir, stage) == metrics(ref_dir, stage), stage
    # the local stages ran in the batch step, without srun
    assert " launching: srun" not in (run_dir / "sftdata" / "stage.log").read_text()
    assert len(metrics(ref_dir, "rl")) >= 3


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_requeued_job_resumes_the_same_run(slurm, reference, tmp_path):
    recipe, ref_dir = reference
    doc = _submit(slurm, recipe, tmp_path)
    job, run_dir = doc["job_id"], tmp_path / "runs" / doc["run_id"]
    env = {**os.environ, **slurm.env}
    wait_for(lambda: list(run_dir.glob("rl/state/step-000001")), "RL's state at step 1", 400)
    subprocess.run(["scontrol", "requeue", job], env=env, check=True, capture_output=True, timeout=30)
    # a requeued job waits (BeginTime) before it starts again; let it start now
    wait_for(lambda: _job_state(slurm, job) == "PENDING", f"job {job} to be pending again", 120)
    subprocess.run(["scontrol", "update", f"JobId={job}", "StartTime=now"], env=env, capture_output=True, timeout=30)
    wait_for(lambda: _job_state(slurm, job) == "" and "completed (run dir" in _job_log(tmp_path, doc),
             f"Slurm job {job} to start again and end", 400)
    log = _job_log(tmp_path, doc)
    proc, status = ringctl_json("status", doc["run_id"], "--workdir", tmp_path / "runs", cwd=tmp_path)
    assert status["status"] == "completed", log
    assert f"the run exists, resuming {doc['run_id']}" in log and "rl interrupted" in log
    runs = [d.name for d in (tmp_path / "runs").iterdir() if not d.name.startswith(".") and d.name != "slurm"]
    assert runs == [doc["run_id"]]  # one run, continued
    for stage in ("sftdata", "prompts", "sft"):  # finished before the requeue: not run again
        assert (run_dir / stage / "stage.log").read_text().count(" launching: ") == 1, stage
    assert (run_dir / "rl" / "stage.log").read_text().count(" launching: ") == 2
    assert metrics(run_dir, "rl") == metrics(ref_dir, "rl")


def test_submit_dry_run_prints_the_script_and_submits_nothing(tmp_path):
    recipe = two_rank_recipe(tmp_path)
    proc = ringctl("submit", recipe, "stages.sft.epochs=1", "--nodes", "2", "--gpus-per-node", "4", "--partition",
                   "gpu", "--time", "1-00:00:00", "--dry-run", "--workdir", tmp_path / "runs", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    script = proc.stdout
    assert script.startswith("#!/bin/bash\n")
    for line in ("#SBATCH --nodes=2", "#SBATCH --ntasks-per-node=1", "#SBATCH --partition=gpu",
                 "#SBATCH --time=1-00:00:00", "#SBATCH --requeue"):
        assert line + "\n" in script
    assert "--gpus-per-node" not in script  # a CPU recipe asks for no GPUs
    run_id = next(ln.split("=", 1)[1] for ln in script.splitlines() if ln.startswith("RUN_ID="))
    assert 'if [ -e "$WORKDIR/$RUN_ID/state.json" ]; then' in script
    assert 'resume "$RUN_ID" --workdir "$WORKDIR"' in script
    run_line = script.splitlines()[-1]
    assert run_line.startswith("exec ") and f" run {recipe.resolve()} stages.sft.epochs=1 " in run_line
    for o in ("++stages.sft.launch.launcher=slurm", "++stages.sft.launch.nproc_per_node=4",
              "++stages.sft.launch.nnodes=2", "++stages.rl.launch.launcher=slurm"):
        assert o in run_line
    assert run_line.endswith('--run-id "$RUN_ID" --workdir "$WORKDIR"')
    assert run_id.startswith("slurm-two-ranks-")
    assert not (tmp_path / "runs").exists()  # nothing written, nothing submitted

    # the job's recipe is validated before anything is written or submitted
    bad = ringctl("submit", recipe, "stages.sft.lr=-1", "--nodes", "1", "--gpus-per-node", "2", cwd=tmp_path)
    assert bad.returncode == 2 and "stages.sft.lr" in bad.stderr and not bad.stdout


def test_plan_shows_the_srun_line(tmp_path):
    recipe = two_rank_recipe(tmp_path)
    proc, doc = ringctl_json("plan", recipe, "++stages.sft.launch.launcher=slurm", "++stages.sft.launch.nnodes=4",
                             cwd=tmp_path, env={"SLURM_JOB_ID": ""})
    assert proc.returncode == 0, proc.stderr
    sft = next(s for s in doc["stages"] if s["name"] == "sft")
    assert sft["launcher"] == "slurm" and sft["world_size"] == 8
    assert sft["launch"] == [
        "srun --nodes=4 --ntasks=4 --ntasks-per-node=1 --kill-on-bad-exit=1 --job-name=sft python -m "
        "torch.distributed.run --nnodes=4 --nproc_per_node=2 --rdzv_backend=c10d "
        "--rdzv_endpoint=$(scontrol show hostnames \"$SLURM_JOB_NODELIST\" | head -n1):29500 --rdzv_id=sft "
        "-m ringctl.pipeline.stage_main '<workdir>/<run-id>' sft".replace("<workdir>", doc["workdir"])]
