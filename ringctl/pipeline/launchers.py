"""How a stage process is started: `local` (one process), `torchrun`, or the `deepspeed` launcher.

Every launcher runs the same entry point, `python -m ringctl.pipeline.stage_main <run_dir> <stage>`, so the
stage code is identical on a laptop and on a cluster; only the process count and the rendezvous differ.
"""

from __future__ import annotations

import shlex
import shutil
import socket
import sys
from dataclasses import dataclass
from pathlib import Path

ENTRY_MODULE = "ringctl.pipeline.stage_main"


@dataclass(frozen=True)
class LaunchSpec:
    launcher: str
    nproc_per_node: int
    nnodes: int
    node_rank: int
    master_addr: str
    master_port: int
    hostfile: str | None = None

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
                      resources.hostfile)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def build_command(spec: LaunchSpec, run_dir: Path, stage: str, python: str | None = None,
                  master_port: int | None = None) -> list[str]:
    """The argv that starts `stage` on this node. `master_port` overrides the recipe's (single-node runs pick
    a free port so that concurrent runs on one machine do not collide)."""
    python = python or sys.executable
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
        return [*cmd, "--module", *entry]
    raise ValueError(f"unknown launcher {spec.launcher!r}")


def per_node_commands(spec: LaunchSpec, run_dir: str, stage: str) -> list[str]:
    """What to type on each node of a multi-node job (shown by `ringctl plan`)."""
    if spec.launcher == "deepspeed":
        # the deepspeed launcher reaches every host of the hostfile over ssh from node 0
        return [shlex.join(build_command(spec, Path(run_dir), stage, python="python"))]
    out = []
    for rank in range(spec.nnodes):
        node = LaunchSpec(spec.launcher, spec.nproc_per_node, spec.nnodes, rank, spec.master_addr, spec.master_port,
                          spec.hostfile)
        out.append(f"# node {rank}: " + shlex.join(build_command(node, Path(run_dir), stage, python="python")))
    return out
