"""Real cluster services on this one machine, for the multi-node launcher tests: a Slurm controller and node
daemon (`SlurmCluster`, Debian's slurm-wlm + munge, started as root) and an sshd on 127.0.0.1 with keys of its
own (`LocalSshd`, for the DeepSpeed launcher's pdsh/ssh path). Each `unavailable()` says why it cannot run here
(not root, packages missing, a daemon that does not start), so the tests skip with that reason."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from tests.helpers import free_port

SLURM_BINARIES = ("slurmctld", "slurmd", "sbatch", "srun", "squeue", "sinfo", "scontrol", "munged")


def _wait(condition, what: str, timeout: float, log: Path | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.5)
    tail = log.read_text(errors="replace")[-2000:] if log is not None and log.exists() else ""
    raise RuntimeError(f"timed out after {timeout:.0f}s waiting for {what}\n{tail}")


@contextmanager
def running(service, what: str) -> Iterator:
    """Start `service` (SlurmCluster, LocalSshd) for a test fixture and stop it after; the test skips, with the
    reason, where it cannot run or does not start."""
    import pytest

    reason = service.unavailable()
    if reason:
        pytest.skip(f"no {what} here: {reason}")
    try:
        service.start()
    except (RuntimeError, OSError) as e:
        service.stop()
        pytest.skip(f"{what} did not start here: {e}")
    try:
        yield service
    finally:
        service.stop()


class SlurmCluster:
    """One Slurm node named after this host (CPUs=2, no cgroups), its state under `root`. `env` points the Slurm
    commands at this cluster's slurm.conf (SLURM_CONF). `gpus`: a count-only GRES (no device files) so that jobs
    asking for GPUs (`--gpus-per-node`) are scheduled on a machine without any."""

    def __init__(self, root: Path, cpus: int = 2, gpus: int = 0):
        self.root = root
        self.cpus = cpus
        self.gpus = gpus
        self.node = socket.gethostname().split(".")[0]
        self.conf = root / "slurm.conf"
        self.env = {"SLURM_CONF": str(self.conf)}
        self._procs: list[subprocess.Popen] = []

    @staticmethod
    def unavailable() -> str | None:
        if os.geteuid() != 0:
            return "starting slurmctld/slurmd needs root (they run as SlurmUser=root here)"
        missing = [b for b in SLURM_BINARIES if shutil.which(b) is None]
        if missing:
            return f"Slurm is not installed ({', '.join(missing)} missing; apt-get install slurm-wlm munge)"
        return None

    def start(self) -> SlurmCluster:
        r = self.root
        for d in ("state", "spool", "munge", "log"):
            (r / d).mkdir(parents=True, exist_ok=True)
        os.chmod(r / "munge", 0o700)
        key = r / "munge" / "munge.key"
        key.write_bytes(os.urandom(1024))
        os.chmod(key, 0o400)
        self.munge_socket = r / "munge" / "munge.socket"
        # munged checks that its key, socket and log dirs are not writable by others; --force accepts a temp dir
        self._procs.append(subprocess.Popen(
            ["munged", "--foreground", "--force", f"--key-file={key}", f"--socket={self.munge_socket}",
             f"--pid-file={r / 'munge' / 'munged.pid'}", f"--log-file={r / 'log' / 'munged.log'}",
             f"--seed-file={r / 'munge' / 'munged.seed'}"],
            stdout=subprocess.DEVNULL, stderr=open(r / "log" / "munged.err", "w")))
        _wait(self.munge_socket.exists, "munged's socket", 30, r / "log" / "munged.err")
        ctl_port, d_port = free_port(), free_port()
        self.conf.write_text(f"""\
ClusterName=ringctltest
SlurmctldHost={self.node}(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
AuthInfo=socket={self.munge_socket}
CredType=cred/munge
SlurmctldPort={ctl_port}
SlurmdPort={d_port}
StateSaveLocation={r / 'state'}
SlurmdSpoolDir={r / 'spool'}
SlurmctldPidFile={r / 'slurmctld.pid'}
SlurmdPidFile={r / 'slurmd.pid'}
SlurmctldLogFile={r / 'log' / 'slurmctld.log'}
SlurmdLogFile={r / 'log' / 'slurmd.log'}
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
SchedulerType=sched/builtin
ReturnToService=2
MpiDefault=none
JobRequeue=1
KillWait=10
InactiveLimit=0
MinJobAge=3600
SlurmctldTimeout=30
SlurmdTimeout=30
{"GresTypes=gpu" if self.gpus else ""}
NodeName={self.node} NodeAddr=127.0.0.1 CPUs={self.cpus} {f"Gres=gpu:{self.gpus}" if self.gpus else ""} State=UNKNOWN
PartitionName=debug Nodes={self.node} Default=YES MaxTime=INFINITE State=UP OverSubscribe=YES
""")
        if self.gpus:
            # slurmd counts a GPU per File; plain files stand for them (no cgroup device constraint here)
            for i in range(self.gpus):
                (r / f"gpu{i}").touch()
            (r / "gres.conf").write_text(f"NodeName={self.node} Name=gpu File={r}/gpu[0-{self.gpus - 1}]\n")
        env = {**os.environ, **self.env}
        for daemon in ("slurmctld", "slurmd"):
            self._procs.append(subprocess.Popen([daemon, "-D", "-f", str(self.conf)], env=env,
                                                stdout=subprocess.DEVNULL,
                                                stderr=open(r / "log" / f"{daemon}.err", "w")))
        _wait(self._idle, f"sinfo to show node {self.node} idle", 60, r / "log" / "slurmctld.log")
        return self

    def _idle(self) -> bool:
        for p in self._procs:
            if p.poll() is not None:
                raise RuntimeError(f"{p.args[0]} exited {p.returncode}")
        out = subprocess.run(["sinfo", "-h", "-N", "-o", "%T"], env={**os.environ, **self.env}, capture_output=True,
                             text=True, timeout=10)
        return out.returncode == 0 and out.stdout.strip().startswith("idle")

    def stop(self) -> None:
        env = {**os.environ, **self.env}
        subprocess.run(["scancel", "--full", "-u", "root"], env=env, capture_output=True, timeout=20)
        for p in reversed(self._procs):
            if p.poll() is None:
                p.terminate()
                try:
                    p.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait()


class LocalSshd:
    """sshd on 127.0.0.1:<free port> with its own host key, authorizing a user key made here. `bin_dir` holds an
    `ssh` that uses this key and config (put it first on PATH: the DeepSpeed launcher and pdsh call `ssh`)."""

    def __init__(self, root: Path):
        self.root = root
        self.port = free_port()
        self.bin_dir = root / "bin"
        self._proc: subprocess.Popen | None = None

    @staticmethod
    def unavailable() -> str | None:
        missing = [b for b in ("sshd", "ssh", "ssh-keygen", "pdsh") if shutil.which(b) is None
                   and not Path("/usr/sbin", b).exists()]
        if missing:
            return f"{', '.join(missing)} not installed (apt-get install openssh-server openssh-client pdsh)"
        if os.geteuid() != 0:
            return "sshd must run as root to log a user in (privilege separation)"
        return None

    def start(self) -> LocalSshd:
        r = self.root
        r.mkdir(parents=True, exist_ok=True)
        os.chmod(r, 0o700)
        for name in ("host_key", "user_key"):
            subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(r / name)], check=True)
        shutil.copy(r / "user_key.pub", r / "authorized_keys")
        Path("/run/sshd").mkdir(exist_ok=True)  # sshd's privilege-separation directory
        (r / "sshd_config").write_text(f"""\
ListenAddress 127.0.0.1
Port {self.port}
HostKey {r / 'host_key'}
PidFile {r / 'sshd.pid'}
AuthorizedKeysFile {r / 'authorized_keys'}
PasswordAuthentication no
KbdInteractiveAuthentication no
PermitRootLogin prohibit-password
StrictModes no
UsePAM no
PermitUserEnvironment no
""")
        (r / "ssh_config").write_text(f"""\
Host *
  IdentityFile {r / 'user_key'}
  IdentitiesOnly yes
  AddressFamily inet
  StrictHostKeyChecking no
  UserKnownHostsFile /dev/null
  LogLevel ERROR
  BatchMode yes
""")
        self.bin_dir.mkdir(exist_ok=True)
        ssh = self.bin_dir / "ssh"
        ssh.write_text(f'#!/bin/sh\nexec {shutil.which("ssh")} -F {r / "ssh_config"} "$@"\n')
        ssh.chmod(0o755)
        sshd = shutil.which("sshd") or "/usr/sbin/sshd"
        self._proc = subprocess.Popen([sshd, "-D", "-e", "-f", str(r / "sshd_config")], stdout=subprocess.DEVNULL,
                                      stderr=open(r / "sshd.log", "w"))

        def answers() -> bool:
            if self._proc.poll() is not None:
                raise RuntimeError(f"sshd exited {self._proc.returncode}: {(r / 'sshd.log').read_text()[-1000:]}")
            return subprocess.run([str(ssh), "-p", str(self.port), "127.0.0.1", "true"], capture_output=True,
                                  timeout=20).returncode == 0

        _wait(answers, "sshd to accept the test's key", 30, r / "sshd.log")
        return self

    def stop(self) -> None:
        if self._proc is not None and self._proc.poll() is None:
            self._proc.terminate()
            self._proc.wait(timeout=10)
