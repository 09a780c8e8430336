"""Run untrusted Python in a separate, isolated process.

Backends (`sandbox.backend` in a recipe; `auto` takes the first that works on this machine):
- `bwrap`: bubblewrap. New user/pid/net/ipc/uts namespaces, the host root bound read-only, a private /tmp and
  /run, a fresh /dev (null, zero, random, ...) and /proc, only the throwaway work directory writable, no
  capabilities (bwrap started by root keeps them otherwise: the program could remount / read-write);
  --die-with-parent.
- `unshare`: the same isolation without bubblewrap, from `unshare(1)` and a small Python helper (NAMESPACE_HELPER):
  user + mount + pid + net + ipc + uts namespaces; every host mount is made read-only recursively
  (mount_setattr), then a private /tmp, /run, /dev and /proc are mounted and the work directory is bound back
  writable; the helper checks that every host mount is read-only and refuses to start the program otherwise;
  finally it enters a second, nested user namespace as a non-root user, so that the program holds no
  capability and cannot remount anything writable again.
- `unsafe-no-isolation`: only the rlimits below; the program can write wherever the invoking user can. Never
  chosen by `auto`; a recipe must name it.

Where neither isolating backend works, `auto` raises SandboxUnavailable (ringctl validate/plan/run report it
before anything runs) and `run` starts nothing. rlimits (CPU, address space, processes, file size, open files)
are set in the child; the environment is empty but for PATH and HOME; output is capped; a wall-clock timeout kills
the whole session (the pid namespace takes every descendant with it). `SandboxResult.isolation` records which
backend ran.
"""

from __future__ import annotations

import json
import os
import re
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

ENV_SANDBOX = "RINGCTL_SANDBOX"  # the recipe's sandbox section (JSON), set in stage processes
UNSAFE = "unsafe-no-isolation"
ISOLATING = ("bwrap", "unshare")
SETUP_FAILED = 125  # exit status of the namespace helper when it could not isolate (the program never ran)
INSTALL_HINT = ("install bubblewrap (`apt-get install bubblewrap`, or your distribution's package), or allow "
                "unprivileged user namespaces (sysctl kernel.unprivileged_userns_clone=1 / "
                "kernel.apparmor_restrict_unprivileged_userns=0); to run model-written code with your user's full "
                f"access instead, set `sandbox: {{backend: {UNSAFE}}}` in the recipe")


class SandboxUnavailable(RuntimeError):
    """No isolating backend works here (or the one the recipe names does not)."""


class SandboxConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    backend: Literal["auto", "bwrap", "unshare", "unsafe-no-isolation"] = Field(
        "auto", description="auto: bwrap, else unshare (both isolate the file system and the network); "
                            f"{UNSAFE}: rlimits only, the program can write wherever you can (never chosen by auto)")
    wall_seconds: float = Field(10.0, gt=0)
    cpu_seconds: int = Field(5, gt=0)
    memory_mb: int = Field(1024, gt=0, description="address-space limit")
    max_processes: int = Field(32, gt=0, description="RLIMIT_NPROC inside the sandbox (fork bombs)")
    max_file_mb: int = Field(16, gt=0)
    max_open_files: int = Field(64, gt=8)
    max_output_bytes: int = Field(1_000_000, gt=0)
    python: str | None = Field(None, description="interpreter that runs the program (default: the one running "
                                                 "ringctl)")
    no_site: bool = Field(True, description="python -S: programs see the standard library only, not this "
                          "environment's site-packages (half the start-up time, less to attack); false when the "
                          "tests need installed packages")

    @property
    def interpreter(self) -> str:
        return self.python or sys.executable

    @classmethod
    def from_env(cls) -> SandboxConfig:
        """The recipe's sandbox section as the stage process received it, else the defaults."""
        raw = os.environ.get(ENV_SANDBOX)
        return cls(**json.loads(raw)) if raw else cls()


@dataclass
class SandboxResult:
    returncode: int | None
    stdout: str
    stderr: str
    timed_out: bool
    isolation: str
    seconds: float
    extra: dict = field(default_factory=dict)


# --------------------------------------------------------------------------------------------------------------
# the unshare backend's helper: runs as root of a fresh user namespace (pid 1 of a fresh pid namespace), isolates
# the file system, drops into a nested unprivileged user namespace and execs the program. stdlib only (python -S).
# argv: workdir, max_processes, then ro-bind paths (interpreter roots under /tmp), "--", the program's argv.
# --------------------------------------------------------------------------------------------------------------
NAMESPACE_HELPER = r'''
import ctypes, os, resource, sys
libc = ctypes.CDLL(None, use_errno=True)
libc.mount.argtypes = (ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulong, ctypes.c_char_p)
libc.unshare.argtypes = (ctypes.c_int,)
RDONLY, NOSUID, NODEV, NOEXEC, REMOUNT, BIND, REC = 1, 2, 4, 8, 32, 4096, 16384
def fail(msg):
    os.write(2, ("ringctl sandbox (unshare): cannot isolate: %s\n" % msg).encode())
    os._exit(125)
def mount(src, tgt, fstype, flags, data=None):
    enc = lambda s: s.encode() if s is not None else None
    if libc.mount(enc(src), enc(tgt), enc(fstype), flags, enc(data)) != 0:
        fail("mount %s on %s: %s" % (src, tgt, os.strerror(ctypes.get_errno())))
class MountAttr(ctypes.Structure):
    _fields_ = [(n, ctypes.c_uint64) for n in ("attr_set", "attr_clr", "propagation", "userns_fd")]
def set_readonly(path, readonly=True):
    attr = MountAttr(1, 0, 0, 0) if readonly else MountAttr(0, 1, 0, 0)  # MOUNT_ATTR_RDONLY, recursively
    if libc.syscall(442, -100, path.encode(), 0x8000, ctypes.byref(attr), ctypes.sizeof(attr)) != 0:
        fail("mount_setattr(%s, ro=%s): %s" % (path, readonly, os.strerror(ctypes.get_errno())))
def mountinfo():
    rows = []
    with open("/proc/self/mountinfo") as f:
        for line in f:
            parts = line.split()
            rows.append((parts[4].replace("\\040", " "), parts[5].split(",")))
    return rows
sep = sys.argv.index("--")
workdir, nproc, ro_paths, argv = sys.argv[1], int(sys.argv[2]), sys.argv[3:sep], sys.argv[sep + 1:]
keep = {p: os.open(p, os.O_PATH) for p in [workdir, *ro_paths]}
devs = {d: os.open("/dev/" + d, os.O_PATH) for d in ("null", "zero", "full", "random", "urandom", "tty")
        if os.path.exists("/dev/" + d)}
set_readonly("/")
rw = [m for m, opts in mountinfo() if "ro" not in opts]
if rw:
    fail("host mounts still writable: %s" % ", ".join(rw[:5]))
for path, opts in (("/tmp", "mode=1777,size=64m"), ("/run", "mode=755,size=1m"), ("/dev", "mode=755,size=1m")):
    if os.path.isdir(path):
        mount("tmpfs", path, "tmpfs", NOSUID | NODEV if path != "/dev" else NOSUID, opts)
for name, fd in devs.items():
    open("/dev/" + name, "w").close()
    mount("/proc/self/fd/%d" % fd, "/dev/" + name, None, BIND)
os.mkdir("/dev/shm")
mount("tmpfs", "/dev/shm", "tmpfs", NOSUID | NODEV, "mode=1777,size=64m")
for src, link in (("/proc/self/fd", "fd"), ("/proc/self/fd/0", "stdin"), ("/proc/self/fd/1", "stdout"),
                  ("/proc/self/fd/2", "stderr")):
    os.symlink(src, "/dev/" + link)
for path, fd in keep.items():
    if path != workdir and not (path == "/tmp" or path.startswith("/tmp/")):
        continue  # still visible (read-only) where it is
    os.makedirs(path, exist_ok=True)
    mount("/proc/self/fd/%d" % fd, path, None, BIND | REC)
    set_readonly(path, path != workdir)  # a bind mount starts with its source's flags: read-only
for fd in [*keep.values(), *devs.values()]:
    os.close(fd)
fresh_proc = libc.mount(b"proc", b"/proc", b"proc", NOSUID | NODEV | NOEXEC, None) == 0
# a nested user namespace as an unprivileged user (uid 1000 there): after exec the program holds no capability,
# so it can neither remount the host read-write nor unmount the private /tmp, /dev or /proc
uid, gid = os.getuid(), os.getgid()
if libc.unshare(0x10000000 | 0x00020000) != 0:  # CLONE_NEWUSER | CLONE_NEWNS
    fail("nested user namespace: %s" % os.strerror(ctypes.get_errno()))
for name, text in (("setgroups", "deny"), ("uid_map", "1000 %d 1" % uid), ("gid_map", "1000 %d 1" % gid)):
    with open("/proc/self/" + name, "w") as f:
        f.write(text)
if not fresh_proc:  # the host's /proc would show host processes (and their root directories): hide it
    mount("tmpfs", "/proc", "tmpfs", NOSUID | NODEV | NOEXEC, "mode=555,size=4k")
os.chdir(workdir)
resource.setrlimit(resource.RLIMIT_NPROC, (nproc, nproc))
libc.prctl(38, 1, 0, 0, 0)  # PR_SET_NO_NEW_PRIVS
os.execv(argv[0], argv)
'''


def _interpreter_roots(program: str) -> list[str]:
    """Environment roots (bin/'s parent, else the executable's folder) of an interpreter that lives under /tmp (a
    checkout or virtual environment there), and of every link on the way to the real one: the sandbox's private
    /tmp would otherwise hide them, so they are bound read-only into it."""
    chain, exe = [], os.path.abspath(program)
    while exe not in chain and len(chain) < 40:
        chain.append(exe)
        if not os.path.islink(exe):
            break
        exe = os.path.normpath(os.path.join(os.path.dirname(exe), os.readlink(exe)))
    roots: list[str] = []
    for exe in chain:
        if exe != "/tmp" and not exe.startswith("/tmp/"):
            continue
        root = Path(exe).parent.parent if Path(exe).parent.name == "bin" else Path(exe).parent
        if str(root) in ("/tmp", "/"):
            root = Path(exe).parent
        if str(root) not in roots:
            roots.append(str(root))
    return roots


def _command(backend: str, workdir: Path, argv: list[str], config: SandboxConfig) -> list[str]:
    if backend == "bwrap":
        ro = [a for root in _interpreter_roots(argv[0]) for a in ("--ro-bind", root, root)]
        # the new user namespace makes RLIMIT_NPROC count only this sandbox's processes. --cap-drop ALL: bwrap
        # started by root keeps every capability otherwise, and the program could remount / read-write
        return ["bwrap", "--unshare-all", "--die-with-parent", "--new-session", "--cap-drop", "ALL",
                "--ro-bind", "/", "/",
                "--tmpfs", "/tmp", "--tmpfs", "/run", *ro, "--dev", "/dev", "--proc", "/proc",
                "--bind", str(workdir), str(workdir),
                "--chdir", str(workdir), "--clearenv", "--setenv", "PATH", "/usr/bin:/bin",
                "--setenv", "HOME", str(workdir), "prlimit", f"--nproc={config.max_processes}", "--", *argv]
    if backend == "unshare":
        return ["unshare", "--user", "--map-root-user", "--mount", "--propagation", "private", "--net", "--pid",
                "--ipc", "--uts", "--fork", "--kill-child", config.interpreter, "-I", "-S", "-c", NAMESPACE_HELPER,
                str(workdir), str(config.max_processes), *_interpreter_roots(argv[0]), "--", *argv]
    if backend == UNSAFE:
        return ["prlimit", f"--nproc={config.max_processes}", "--", *argv]
    raise ValueError(f"unknown sandbox backend {backend!r}")


def _limits(config: SandboxConfig):
    def apply() -> None:
        mb = 1024 * 1024
        resource.setrlimit(resource.RLIMIT_CPU, (config.cpu_seconds, config.cpu_seconds + 1))
        resource.setrlimit(resource.RLIMIT_AS, (config.memory_mb * mb, config.memory_mb * mb))
        resource.setrlimit(resource.RLIMIT_FSIZE, (config.max_file_mb * mb, config.max_file_mb * mb))
        resource.setrlimit(resource.RLIMIT_NOFILE, (config.max_open_files, config.max_open_files))
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))

    return apply


# --------------------------------------------------------------------------------------------------------------
# which backend works here
# --------------------------------------------------------------------------------------------------------------
_PROBES: dict[tuple[str, str], str | None] = {}


STALE_AFTER_S = 300.0
SCRATCH_KINDS = ("code", "sandbox", "sandbox-probe")
_SCRATCH = re.compile(rf"^ringctl-(?:{'|'.join(map(re.escape, SCRATCH_KINDS))})-(\d+)-")
_swept = False


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # somebody else's process
        pass
    return True


def sweep_stale_scratch(tmp: Path | None = None, now: float | None = None) -> list[Path]:
    """Remove the throwaway directories of scorers that are gone: a process killed while a program ran (a chaos
    kill, an OOM, a preempted node) cannot remove its own. A directory is stale when the pid in its name is not
    running here and it has not changed for STALE_AFTER_S seconds (a pid from another namespace sharing /tmp
    keeps its directory while it is busy)."""
    tmp = Path(tmp or tempfile.gettempdir())
    now = time.time() if now is None else now
    removed = []
    for d in tmp.glob("ringctl-*-*"):
        m = _SCRATCH.match(d.name)
        if not m or _alive(int(m.group(1))):
            continue
        try:
            if now - d.stat().st_mtime < STALE_AFTER_S:
                continue
        except OSError:
            continue
        shutil.rmtree(d, ignore_errors=True)
        removed.append(d)
    return removed


@contextmanager
def scratch_dir(kind: str) -> Iterator[Path]:
    """A directory for one program, named after this process (so a later scorer can sweep it up if this one is
    killed) and removed when the program is done; the first use in a process sweeps stale ones."""
    global _swept
    if kind not in SCRATCH_KINDS:
        raise ValueError(f"unknown scratch kind {kind!r}: add it to SCRATCH_KINDS so that a killed owner's is swept")
    if not _swept:
        _swept = True
        sweep_stale_scratch()
    workdir = Path(tempfile.mkdtemp(prefix=f"ringctl-{kind}-{os.getpid()}-"))
    try:
        yield workdir
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def probe(backend: str, config: SandboxConfig | None = None) -> str | None:
    """Why `backend` cannot isolate a program on this machine, or None when it works (cached per process). The
    probe runs a real program through it: for `unshare`, the helper's own checks (every host mount read-only)
    must pass."""
    config = config or SandboxConfig()
    key = (backend, config.interpreter)
    if key in _PROBES:
        return _PROBES[key]
    tool = "bwrap" if backend == "bwrap" else "unshare"
    if backend not in ISOLATING:
        reason = None
    elif not shutil.which(tool):
        reason = f"`{tool}` is not installed"
    else:
        with scratch_dir("sandbox-probe") as workdir:
            try:
                argv = [config.interpreter, "-I", "-S", "-c", "open('probe', 'w').write('ok')"]
                proc = subprocess.run(_command(backend, workdir, argv, config), capture_output=True, timeout=30,
                                      cwd=workdir, env={"PATH": "/usr/bin:/bin", "HOME": str(workdir)})
                ok = (proc.returncode == 0 and (workdir / "probe").is_file()
                      and (workdir / "probe").read_text() == "ok")
                err = proc.stderr.decode(errors="replace").strip().splitlines()
                reason = None if ok else f"{tool} failed (exit {proc.returncode}): {err[-1] if err else 'no output'}"
            except (OSError, subprocess.TimeoutExpired) as e:
                reason = f"{tool} failed: {type(e).__name__}: {e}"
    _PROBES[key] = reason
    return reason


def choose_backend(config: SandboxConfig) -> str:
    """The backend `run` uses: the configured one, or for `auto` the first isolating one that works. Raises
    SandboxUnavailable when no isolating backend works (auto), or the named isolating one does not."""
    if config.backend == UNSAFE:
        return UNSAFE
    candidates = ISOLATING if config.backend == "auto" else (config.backend,)
    reasons = []
    for backend in candidates:
        reason = probe(backend, config)
        if reason is None:
            return backend
        reasons.append(f"{backend}: {reason}")
    what = "no isolating sandbox works on this machine" if config.backend == "auto" else \
        f"sandbox backend {config.backend!r} does not work on this machine"
    raise SandboxUnavailable(f"{what} ({'; '.join(reasons)}); model-written code is not run unprotected: "
                             f"{INSTALL_HINT}")


# --------------------------------------------------------------------------------------------------------------
# running programs
# --------------------------------------------------------------------------------------------------------------
def run(argv: list[str], workdir: Path, config: SandboxConfig, stdin: str = "",
        pass_fds: tuple[int, ...] = ()) -> SandboxResult:
    """Run argv (the program is already written in workdir) under the sandbox. Never raises on the program; when
    no isolating backend works, nothing runs (returncode None, isolation "none", the reason in stderr)."""
    start = time.perf_counter()
    try:
        backend = choose_backend(config)
    except SandboxUnavailable as e:
        return SandboxResult(None, "", str(e), False, "none", time.perf_counter() - start)
    cmd = _command(backend, workdir, argv, config)
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
        try:  # anything left in the session goes too
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    cap = config.max_output_bytes
    return SandboxResult(proc.returncode, out[:cap].decode(errors="replace"), err[:cap].decode(errors="replace"),
                         timed_out, backend, time.perf_counter() - start)


def run_python(code: str, config: SandboxConfig | None = None, stdin: str = "") -> SandboxResult:
    """Run a Python program in a throwaway directory; the directory is removed afterwards."""
    config = config or SandboxConfig()
    with scratch_dir("sandbox") as workdir:
        (workdir / "program.py").write_text(code, encoding="utf-8")
        return run([config.interpreter, "-I", *(["-S"] if config.no_site else []), "program.py"], workdir, config,
                   stdin=stdin)
