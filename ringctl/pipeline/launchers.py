"""How a stage process is started: `local` (one process), `torchrun`, the `deepspeed` launcher, or `slurm`.

Every launcher runs the same entry point, `python -m ringctl.pipeline.stage_main <run_dir> <stage>`, so the
stage code is identical on a laptop and on a cluster; only the process count and the rendezvous differ.

`slurm` runs inside an allocation (`ringctl submit` writes the sbatch script; the pipeline runs in the batch
step, on the allocation's first node, where local stages run too). A distributed stage is one job step: `srun`
starts one task per node, and each task is a torchrun that starts the node's ranks and meets the others at a
c10d rendezvous on the first node. One torchrun per node (rather than one srun task per rank with RANK/
LOCAL_RANK mapped from SLURM_PROCID/SLURM_LOCALID) keeps the ranks' environment exactly what the `torchrun`
launcher gives, so a stage behaves the same under both, and Slurm needs no GPU-per-task binding.
"""

from __future__ import annotations

import os
import shlex
import shutil
import socket
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

ENTRY_MODULE = "ringctl.pipeline.stage_main"
# what a plan shows for the rendezvous host when it is made outside an allocation (the batch script's shell
# expands it on the allocation's first node)
SLURM_FIRST_NODE = '$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n1)'


@dataclass(frozen=True)
class LaunchSpec:
    launcher: str
    nproc_per_node: int
    nnodes: int
    node_rank: int
    master_addr: str
    master_port: int
    hostfile: str | None = None
    ssh_port: int | None = None

    @property
    def world_size(self) -> int:
        return self.nproc_per_node * self.nnodes


def launch_spec(stage_cfg, resources) -> LaunchSpec:
    """The stage's `launch` section over the recipe's `resources` defaults."""
    launch = stage_cfg.launch
    launcher = launch.launcher or resources.launcher
    nproc = launch.nproc_per_node or resources.nproc_per_node
    nnodes = launch.nnodes or resources.nnodes
    if launcher == "local":
        nproc, nnodes = 1, 1
    return LaunchSpec(launcher, nproc, nnodes, resources.node_rank, resources.master_addr, resources.master_port,
                      resources.hostfile, resources.ssh_port)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def slurm_first_node() -> str | None:
    """The first node of this Slurm allocation (where the batch script runs), or None outside one."""
    nodelist = os.environ.get("SLURM_JOB_NODELIST") if os.environ.get("SLURM_JOB_ID") else None
    if not nodelist:
        return None
    try:
        out = subprocess.run(["scontrol", "show", "hostnames", nodelist], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        out = None
    if out is not None and out.returncode == 0 and out.stdout.split():
        return out.stdout.split()[0]
    return nodelist.split(",")[0] if "[" not in nodelist else None


def _on_host(node: str) -> bool:
    return node.split(".")[0] == socket.gethostname().split(".")[0]


def build_command(spec: LaunchSpec, run_dir: Path, stage: str, python: str | None = None,
                  master_port: int | None = None) -> list[str]:
    """The argv that starts `stage` on this node. `master_port` overrides the recipe's (single-node runs pick
    a free port so that concurrent runs on one machine do not collide; so does a `slurm` stage started on the
    allocation's first node, which hosts the rendezvous)."""
    python = python or sys.executable
    if spec.launcher == "slurm":
        first = slurm_first_node()
        if master_port is None and first is not None and _on_host(first):
            master_port = free_port()
        return _srun(spec, run_dir, stage, python, first or SLURM_FIRST_NODE, master_port or spec.master_port)
    port = str(master_port or spec.master_port)
    entry = [ENTRY_MODULE, str(run_dir), stage]
    if spec.launcher == "local":
        return [python, "-m", *entry]
    if spec.launcher == "torchrun":
        cmd = [python, "-m", "torch.distributed.run", f"--nproc_per_node={spec.nproc_per_node}",
               f"--nnodes={spec.nnodes}", f"--node_rank={spec.node_rank}", f"--master_addr={spec.master_addr}",
               f"--master_port={port}"]
        return [*cmd, "-m", *entry]
    if spec.launcher == "deepspeed":
        ds = shutil.which("deepspeed", path=str(Path(python).parent)) or "deepspeed"
        cmd = [ds, f"--num_nodes={spec.nnodes}", f"--num_gpus={spec.nproc_per_node}", f"--master_port={port}",
               f"--master_addr={spec.master_addr}", "--no_local_rank"]
        if spec.hostfile:
            cmd.append(f"--hostfile={spec.hostfile}")
        if spec.ssh_port:  # the ssh check and pdsh (PDSH_SSH_ARGS_APPEND) both use it
            cmd.append(f"--ssh_port={spec.ssh_port}")
        return [*cmd, "--module", *entry]
    raise ValueError(f"unknown launcher {spec.launcher!r}")


def _srun(spec: LaunchSpec, run_dir: Path, stage: str, python: str, first_node: str, port: int) -> list[str]:
    """One srun job step over the allocation's nodes, one torchrun per node (c10d rendezvous on the first)."""
    srun = ["srun", f"--nodes={spec.nnodes}", f"--ntasks={spec.nnodes}", "--ntasks-per-node=1",
            "--kill-on-bad-exit=1", f"--job-name={stage}"]
    torchrun = [python, "-m", "torch.distributed.run", f"--nnodes={spec.nnodes}",
                f"--nproc_per_node={spec.nproc_per_node}", "--rdzv_backend=c10d",
                f"--rdzv_endpoint={first_node}:{port}", f"--rdzv_id={stage}"]
    return [*srun, *torchrun, "-m", ENTRY_MODULE, str(run_dir), stage]


def launch_env(spec: LaunchSpec, stage_dir: Path, env: dict) -> dict:
    """Environment additions for the stage process. The DeepSpeed launcher on several hosts starts every rank
    over ssh (pdsh) and passes on only some variables (PYTHON*, MLFLOW*, ...); ringctl's own (RINGCTL_*: the
    tracking URI, the fingerprint, the MLflow run) and a set OMP_NUM_THREADS (the ranks' math threads, what
    torchrun would give them) go through its env file (DS_ENV_FILE, an absolute path)."""
    if spec.launcher != "deepspeed" or not spec.hostfile:
        return {}
    path = stage_dir.resolve() / "deepspeed.env"
    lines = [f"{k}={v}" for k, v in sorted(env.items())
             if (k.startswith("RINGCTL_") or k == "OMP_NUM_THREADS") and "\n" not in v]
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return {"DS_ENV_FILE": str(path)}


def per_node_commands(spec: LaunchSpec, run_dir: str, stage: str) -> list[str]:
    """What to type on each node of a multi-node job (shown by `ringctl plan`)."""
    if spec.launcher == "deepspeed":
        # the deepspeed launcher reaches every host of the hostfile over ssh from node 0
        return [shlex.join(build_command(spec, Path(run_dir), stage, python="python"))]
    if spec.launcher == "slurm":
        # one job step from the batch script (the first node); inside an allocation, with its first node's name
        first = slurm_first_node()
        cmd = shlex.join(_srun(spec, Path(run_dir), stage, "python", "FIRST_NODE", spec.master_port))
        return [cmd.replace("FIRST_NODE", first or SLURM_FIRST_NODE)]
    out = []
    for rank in range(spec.nnodes):
        node = LaunchSpec(spec.launcher, spec.nproc_per_node, spec.nnodes, rank, spec.master_addr, spec.master_port,
                          spec.hostfile, spec.ssh_port)
        out.append(f"# node {rank}: " + shlex.join(build_command(node, Path(run_dir), stage, python="python")))
    return out
