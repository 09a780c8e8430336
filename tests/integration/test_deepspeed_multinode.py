"""The DeepSpeed launcher's multi-node path for real: a hostfile with two names of this machine (`localhost` and
`127.0.0.1`, one slot each), reached over ssh (an sshd of the test's own on 127.0.0.1, keys made here, the port
given to DeepSpeed as resources.ssh_port) and pdsh: SFT and RL as 2 "nodes" x 1 rank give the same metrics as
1 node x 2 ranks (torchrun). All traffic stays on 127.0.0.0/8. Skipped, with the reason, where sshd or pdsh
cannot run (not root, openssh-server/pdsh not installed: `make setup` installs them as root)."""

from __future__ import annotations

import os

import pytest

from tests.helpers import ringctl_json, write
from tests.integration.test_slurm import metrics, two_rank_recipe
from tests.local_cluster import LocalSshd, running

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]


@pytest.fixture
def sshd(tmp_path):
    pytest.importorskip("deepspeed", reason="deepspeed is not installed")
    with running(LocalSshd(tmp_path / "ssh"), "ssh to this machine") as server:
        yield server


def test_two_hosts_by_ssh_equal_one_host_with_two_ranks(sshd, tmp_path):
    recipe = two_rank_recipe(tmp_path)
    # the same math threads in both runs (torchrun gives 2 ranks on one node OMP_NUM_THREADS=1; DeepSpeed gets it
    # from ringctl's env file on every host)
    threads = {"OMP_NUM_THREADS": "1"}
    proc, ref = ringctl_json("run", recipe, "--workdir", tmp_path / "ref", cwd=tmp_path, env=threads, timeout=600)
    assert proc.returncode == 0, proc.stderr

    hostfile = write(tmp_path / "hostfile", "localhost slots=1\n127.0.0.1 slots=1\n")
    launch = ["++stages.{s}.launch.launcher=deepspeed", "++stages.{s}.launch.nnodes=2",
              "++stages.{s}.launch.nproc_per_node=1"]
    overrides = [o.format(s=s) for s in ("sft", "rl") for o in launch]
    overrides += [f"++resources.hostfile={hostfile}", f"++resources.ssh_port={sshd.port}",
                  "++resources.master_addr=127.0.0.1"]
    # the test's `ssh` (its key, no known_hosts) first on PATH: DeepSpeed's ssh check and pdsh's rcmd both call it
    env = {"PATH": f"{sshd.bin_dir}{os.pathsep}{os.environ['PATH']}", **threads}
    proc, doc = ringctl_json("run", recipe, *overrides, "--workdir", tmp_path / "ds", cwd=tmp_path, env=env,
                             timeout=600)
    run_dir = tmp_path / "ds" / doc["run_id"]
    assert proc.returncode == 0, (run_dir / "rl" / "stage.log").read_text()[-3000:] if (run_dir / "rl").exists() \
        else (run_dir / "sft" / "stage.log").read_text()[-3000:]
    for stage in ("sft", "rl"):
        log = (run_dir / stage / "stage.log").read_text()
        assert "--num_nodes=2 --num_gpus=1" in log and f"--ssh_port={sshd.port}" in log
        assert "pdsh -S -f 1024 -w localhost,127.0.0.1" in log  # the launcher went through pdsh to both hosts
        assert metrics(run_dir, stage) == metrics(tmp_path / "ref" / ref["run_id"], stage), stage
    # what DeepSpeed passed to the ranks over ssh: ringctl's variables (rank 0 logs to MLflow with them)
    passed = (run_dir / "sft" / "deepspeed.env").read_text()
    assert "RINGCTL_FINGERPRINT=" in passed and "RINGCTL_TRACKING_URI=" in passed and "OMP_NUM_THREADS=1" in passed
