"""Run untrusted Python in a separate, isolated process.

Isolation: bubblewrap (new user/pid/net/ipc namespaces, read-only root, private /tmp, only the throwaway work
directory writable; --die-with-parent) when /usr/bin/bwrap works, else `unshare` (net namespace when
permitted) with the same rlimits. rlimits (CPU, address space, processes, file size, open files) are set in
the child before exec; the environment is empty but for PATH; output is capped; a wall-clock timeout kills
the whole session (the pid namespace takes every descendant with it). `SandboxResult.isolation` records
which backend ran.
"""

from __future__ import annotations

import os
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class SandboxConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    backend: Literal["auto", "bwrap", "unshare"] = "auto"
    wall_seconds: float = Field(10.0, gt=0)
    cpu_seconds: int = Field(5, gt=0)
    memory_mb: int = Field(1024, gt=0, description="address-space limit")
    max_processes: int = Field(32, gt=0, description="RLIMIT_NPROC inside the sandbox (fork bombs)")
    max_file_mb: int = Field(16, gt=0)
    max_open_files: int = Field(64, gt=8)
    max_output_bytes: int = Field(1_000_000, gt=0)
    python: str = Field(sys.executable, description="interpreter that runs the program")
    no_site: bool = Field(True, description="python -S: programs see the standard library only, not this "
                          "environment's site-packages (half the start-up time, less to attack); false when the "
                          "tests need installed packages")


@dataclass
class SandboxResult:
    returncode: int | None
    stdout: str
    stderr: str
    timed_out: bool
    isolation: str
    seconds: float
    extra: dict = field(default_factory=dict)


def _bwrap_works() -> bool:
    if not shutil.which("bwrap"):
        return False
    try:
        return subprocess.run(["bwrap", "--unshare-all", "--die-with-parent", "--ro-bind", "/", "/", "true"],
                              capture_output=True, timeout=10).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


_BWRAP_OK: bool | None = None


def choose_backend(config: SandboxConfig) -> str:
    global _BWRAP_OK
    if config.backend != "auto":
        return config.backend
    if _BWRAP_OK is None:
        _BWRAP_OK = _bwrap_works()
    return "bwrap" if _BWRAP_OK else "unshare"


def _limits(config: SandboxConfig):
    def apply() -> None:
        mb = 1024 * 1024
        resource.setrlimit(resource.RLIMIT_CPU, (config.cpu_seconds, config.cpu_seconds + 1))
        resource.setrlimit(resource.RLIMIT_AS, (config.memory_mb * mb, config.memory_mb * mb))
        resource.setrlimit(resource.RLIMIT_FSIZE, (config.max_file_mb * mb, config.max_file_mb * mb))
        resource.setrlimit(resource.RLIMIT_NOFILE, (config.max_open_files, config.max_open_files))
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))

    return apply


def _interpreter_mounts(program: str) -> list[str]:
    """Read-only binds for an interpreter that lives under /tmp (a checkout or virtual environment there), which the
    sandbox's private /tmp would otherwise hide: the environment root (bin/'s parent, else the executable's folder)
    of the executable and of every link on the way to the real one."""
    chain, exe = [], os.path.abspath(program)
    while exe not in chain and len(chain) < 40:
        chain.append(exe)
        if not os.path.islink(exe):
            break
        exe = os.path.normpath(os.path.join(os.path.dirname(exe), os.readlink(exe)))
    mounts: list[str] = []
    for exe in chain:
        if exe != "/tmp" and not exe.startswith("/tmp/"):
            continue
        root = Path(exe).parent.parent if Path(exe).parent.name == "bin" else Path(exe).parent
        if str(root) in ("/tmp", "/"):
            root = Path(exe).parent
        mounts += ["--ro-bind", str(root), str(root)]
    return mounts


def _command(backend: str, workdir: Path, argv: list[str], config: SandboxConfig, pass_fds: tuple[int, ...]) -> list[str]:
    nproc = ["prlimit", f"--nproc={config.max_processes}", "--"]
    if backend == "bwrap":
        # the new user namespace makes RLIMIT_NPROC count only this sandbox's processes
        return ["bwrap", "--unshare-all", "--die-with-parent", "--new-session", "--ro-bind", "/", "/",
                "--tmpfs", "/tmp", *_interpreter_mounts(argv[0]), "--dev", "/dev", "--proc", "/proc",
                "--bind", str(workdir), str(workdir),
                "--chdir", str(workdir), "--clearenv", "--setenv", "PATH", "/usr/bin:/bin",
                "--setenv", "HOME", str(workdir), *nproc, *argv]
    return ["unshare", "--user", "--map-root-user", "--net", "--pid", "--fork", "--kill-child", *nproc, *argv]


def run(argv: list[str], workdir: Path, config: SandboxConfig, stdin: str = "",
        pass_fds: tuple[int, ...] = ()) -> SandboxResult:
    """Run argv (the program is already written in workdir) under the sandbox. Never raises on the program."""
    backend = choose_backend(config)
    cmd = _command(backend, workdir, argv, config, pass_fds)
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            cwd=workdir, env={"PATH": "/usr/bin:/bin", "HOME": str(workdir)},
                            preexec_fn=_limits(config), start_new_session=True, pass_fds=pass_fds)
    timed_out = False
    try:
        out, err = proc.communicate(stdin.encode(), timeout=config.wall_seconds)
    except subprocess.TimeoutExpired:
        timed_out = True
        os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
    finally:
        try:  # anything left in the session (unshare fallback) goes too
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    cap = config.max_output_bytes
    return SandboxResult(proc.returncode, out[:cap].decode(errors="replace"), err[:cap].decode(errors="replace"),
                         timed_out, backend, time.perf_counter() - start)


def run_python(code: str, config: SandboxConfig | None = None, stdin: str = "") -> SandboxResult:
    """Run a Python program in a throwaway directory; the directory is removed afterwards."""
    config = config or SandboxConfig()
    workdir = Path(tempfile.mkdtemp(prefix="ringctl-sandbox-"))
    try:
        (workdir / "program.py").write_text(code, encoding="utf-8")
        return run([config.python, "-I", *(["-S"] if config.no_site else []), "program.py"], workdir, config, stdin=stdin)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
