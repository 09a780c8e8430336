"""`ringctl submit`: the sbatch script that runs a recipe's pipeline in a Slurm allocation, and its submission.

The script runs the pipeline in the batch step (the allocation's first node): local stages run there, the stages
the recipe distributes (launcher torchrun / deepspeed / slurm) become `slurm` stages, one srun job step each over
the allocation's nodes (ringctl.pipeline.launchers). The run id is fixed when the script is written; the job is
`--requeue`: a requeued or preempted job finds the run's state and runs `ringctl resume <id>` (finished stages
are skipped, the interrupted one continues from its last checkpoint) instead of starting a second run.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

from ringctl.errors import BadInput, RingctlError
from ringctl.pipeline.state import STATE_FILE

DISTRIBUTED = ("torchrun", "deepspeed", "slurm")


def launch_overrides(recipe, nodes: int, gpus_per_node: int) -> list[str]:
    """Overrides that give the recipe's distributed stages the allocation's shape under the `slurm` launcher
    (`++`: set whether or not the recipe names the key); local stages stay local."""
    out = []
    res = recipe.resources
    if res.launcher in DISTRIBUTED:
        out += ["++resources.launcher=slurm", f"++resources.nnodes={nodes}", f"++resources.nproc_per_node={gpus_per_node}"]
    for name, cfg in recipe.stages.items():
        launcher = cfg.launch.launcher or res.launcher
        if launcher not in DISTRIBUTED:
            continue
        if cfg.launch.launcher is not None:
            out.append(f"++stages.{name}.launch.launcher=slurm")
        if cfg.launch.nnodes is not None or res.launcher not in DISTRIBUTED:
            out.append(f"++stages.{name}.launch.nnodes={nodes}")
        if cfg.launch.nproc_per_node is not None or res.launcher not in DISTRIBUTED:
            out.append(f"++stages.{name}.launch.nproc_per_node={gpus_per_node}")
    return out


def distributed_stages(recipe) -> list[str]:
    return [n for n, c in recipe.stages.items() if (c.launch.launcher or recipe.resources.launcher) in DISTRIBUTED]


def _ringctl() -> list[str]:
    exe = Path(sys.executable).parent / "ringctl"
    return [str(exe)] if exe.exists() else [sys.executable, "-m", "ringctl"]


def sbatch_script(*, recipe_path: Path, recipe, overrides: list[str], run_id: str, workdir: Path, nodes: int,
                  gpus_per_node: int, partition: str | None, time_limit: str | None, tracking_uri: str | None,
                  skip_input_check: bool, log_dir: Path) -> str:
    """The batch script. `workdir` and `log_dir` are absolute; the script runs in the submitting directory."""
    q = shlex.quote
    lines = ["#!/bin/bash", f"#SBATCH --job-name=ringctl-{recipe.name}", f"#SBATCH --nodes={nodes}",
             "#SBATCH --ntasks-per-node=1"]
    if recipe.resources.device != "cpu":  # a CPU recipe needs no GPUs (tests run it on a CPU-only Slurm)
        lines.append(f"#SBATCH --gpus-per-node={gpus_per_node}")
    if partition:
        lines.append(f"#SBATCH --partition={partition}")
    if time_limit:
        lines.append(f"#SBATCH --time={time_limit}")
    lines += ["#SBATCH --requeue",  # a preempted or requeued job starts this script again: it resumes the run
              "#SBATCH --open-mode=append",  # each start's output goes to the same log
              f"#SBATCH --output={log_dir / (run_id + '-%j.log')}",
              # 2 minutes before the time limit ringctl gets SIGTERM: the running stage saves a checkpoint
              "#SBATCH --signal=B:TERM@120",
              "set -eu", f"cd {q(os.getcwd())}", "export PYTHONUNBUFFERED=1",
              f"RUN_ID={q(run_id)}", f"WORKDIR={q(str(workdir))}"]
    common = ["--workdir", '"$WORKDIR"']
    if tracking_uri:
        common += ["--tracking-uri", q(tracking_uri)]
    if skip_input_check:
        common.append("--skip-input-check")
    exe = " ".join(q(a) for a in _ringctl())
    lines += [f'if [ -e "$WORKDIR/$RUN_ID/{STATE_FILE}" ]; then',
              '  echo "[ringctl] Slurm job $SLURM_JOB_ID (start $((${SLURM_RESTART_COUNT:-0} + 1))): '
              'the run exists, resuming $RUN_ID"',
              f'  exec {exe} resume "$RUN_ID" {" ".join(common)}',
              "fi",
              " ".join(["exec", exe, "run", q(str(recipe_path.resolve())), *map(q, overrides), "--run-id",
                        '"$RUN_ID"', *common])]
    return "\n".join(lines) + "\n"


def submit(script: Path) -> str:
    """sbatch the script; the job id."""
    try:
        out = subprocess.run(["sbatch", "--parsable", str(script)], capture_output=True, text=True, timeout=120)
    except FileNotFoundError:
        raise BadInput("sbatch is not on PATH: `ringctl submit` needs a Slurm login node "
                       "(--dry-run prints the script without submitting)") from None
    except subprocess.TimeoutExpired:
        raise RingctlError(f"sbatch {script} did not answer within 120 s") from None
    if out.returncode != 0:
        raise RingctlError(f"sbatch {script} failed (exit {out.returncode}): {out.stderr.strip()[-500:]}")
    m = re.match(r"\s*(\d+)", out.stdout)
    if not m:
        raise RingctlError(f"sbatch printed no job id: {out.stdout.strip()[:200]}")
    return m.group(1)
