"""What the runner knows about a stage's rank processes: per-rank exit records, heartbeats and stack dumps, and
the rule that decides whether a failed stage is retried (`retries`) or needs a person.

Every rank (stage_main) keeps two small files in `<stage_dir>/ranks/`:
- `rank-<R>.json`: {"pid", "status": "running"} when it starts; {"status": "exited", "code", "error"} when Python
  leaves it (normally, on an exception, or after a stop request). A rank killed by a signal it cannot handle
  (SIGKILL, the OOM killer) or lost with its node never writes the second record: it stays "running".
- `heartbeat.rank<R>`: touched by `StageContext.heartbeat()` at every training step; its mtime is the rank's last
  sign of progress. The hang watchdog arms at the first heartbeat of the attempt: a stage's setup (imports, model
  loading, a first evaluation) may take long on a busy machine or with a large model, and is left to the
  launcher's and the collectives' own timeouts.
and `stacks.rank<R>.txt`, where faulthandler writes all its threads' Python stacks on SIGUSR1.

The retry rule (`retry_cause`): a stage that exited non-zero without an interrupt from ringctl is retried when its
processes were lost, not when its code failed:
- a rank reported an exception of its own (anything but a lost connection to a peer) or bad input: never retried,
  whatever else happened (the other ranks die with it; retrying a bug or a bad file only repeats it);
- otherwise, a rank that started and never exited (killed by a signal, lost node), a launcher killed by a signal,
  or ranks that only lost their peers (gloo/NCCL connection errors): retried from the latest checkpoint;
- no rank record at all (the processes never started: a launcher or import failure) or anything else: not retried.
A hang (no heartbeat for `hang_timeout`) is detected by the runner itself and always retried.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import time
from dataclasses import dataclass
from pathlib import Path

from ringctl import artifacts

RANKS_DIR = "ranks"

# the messages of a collective whose peer is gone (gloo: "Connection closed by peer"; NCCL: remote errors, timeouts)
_PEER_LOST = re.compile(r"Connection (closed|reset) by peer|Broken pipe|remote worker|Socket Timeout|Timed out|"
                        r"NCCL (communicator|error|remote)|DistNetworkError|DistBackendError|watchdog", re.I)


def ranks_dir(stage_dir: Path) -> Path:
    return Path(stage_dir) / RANKS_DIR


def heartbeat_path(stage_dir: Path, rank: int) -> Path:
    return ranks_dir(stage_dir) / f"heartbeat.rank{rank}"


def stacks_path(stage_dir: Path, rank: int) -> Path:
    return ranks_dir(stage_dir) / f"stacks.rank{rank}.txt"


def _record_path(stage_dir: Path, rank: int) -> Path:
    return ranks_dir(stage_dir) / f"rank-{rank}.json"


# -- written by each rank (stage_main) -------------------------------------------------------------------------
def rank_started(stage_dir: Path, rank: int) -> None:
    ranks_dir(stage_dir).mkdir(parents=True, exist_ok=True)
    artifacts.atomic_write_json(_record_path(stage_dir, rank),
                                {"rank": rank, "pid": os.getpid(), "host": socket.gethostname(), "status": "running",
                                 "started": time.time()})


def error_kind(e: BaseException) -> str:
    """'bad_input' (ringctl's BadInput), 'peer' (a collective whose peer is gone) or 'error' (the stage's own)."""
    from ringctl.errors import BadInput

    if isinstance(e, BadInput):
        return "bad_input"
    names = {t.__name__ for t in type(e).__mro__}
    if "DistError" in names or (isinstance(e, RuntimeError) and _PEER_LOST.search(str(e))):
        return "peer"
    return "error"


def rank_exited(stage_dir: Path, rank: int, code: int, error: BaseException | None) -> None:
    try:
        artifacts.atomic_write_json(_record_path(stage_dir, rank),
                                    {"rank": rank, "pid": os.getpid(), "status": "exited", "code": code,
                                     "error": error_kind(error) if error is not None else None,
                                     "message": f"{type(error).__name__}: {str(error)[:300]}" if error else None,
                                     "ended": time.time()})
    except OSError:  # a full disk must not hide the stage's exit code
        pass


# -- read by the runner ------------------------------------------------------------------------------------
def reset(stage_dir: Path) -> None:
    """Before a launch: an earlier attempt's records and heartbeats say nothing about this one."""
    d = ranks_dir(stage_dir)
    if d.exists():
        for p in d.iterdir():
            p.unlink(missing_ok=True)
    d.mkdir(parents=True, exist_ok=True)


def rank_records(stage_dir: Path) -> dict[int, dict]:
    out = {}
    for p in sorted(ranks_dir(stage_dir).glob("rank-*.json")):
        try:
            rec = artifacts.read_json(p)
        except (OSError, ValueError):
            continue
        out[int(rec["rank"])] = rec
    return out


def retry_cause(stage_dir: Path, launcher_code: int) -> tuple[bool, str]:
    """(retry?, why) for a stage whose launcher exited `launcher_code` != 0 without an interrupt (module docstring)."""
    records = rank_records(stage_dir)
    for kind, what in (("bad_input", "bad input"), ("error", "an error")):
        failed = [r for r, rec in sorted(records.items()) if rec.get("error") == kind]
        if failed:
            return False, f"rank {failed[0]} reported {what} ({records[failed[0]].get('message')})"
    lost = [r for r, rec in sorted(records.items()) if rec.get("status") == "running"]
    if lost:
        return True, (f"rank(s) {', '.join(map(str, lost))} died without exiting (killed by a signal or lost with "
                      f"their node)")
    if launcher_code < 0:
        return True, f"the launcher was killed by signal {-launcher_code}"
    peers = [r for r, rec in sorted(records.items()) if rec.get("error") == "peer"]
    if peers:
        return True, f"rank(s) {', '.join(map(str, peers))} lost their peers ({records[peers[0]].get('message')})"
    if not records:
        return False, f"the launcher exited {launcher_code} before any rank started"
    return False, f"the launcher exited {launcher_code}"


def last_progress(stage_dir: Path) -> float | None:
    """The time of the newest heartbeat of any rank; None before the first."""
    newest = None
    for p in ranks_dir(stage_dir).glob("heartbeat.rank*"):
        try:
            newest = max(newest or 0.0, p.stat().st_mtime)
        except OSError:
            continue
    return newest


def process_tree(pid: int) -> list[int]:
    """`pid` and all its descendants (from /proc/<pid>/task/*/children), parents before children."""
    out, todo = [], [pid]
    while todo:
        p = todo.pop(0)
        out.append(p)
        for task in Path(f"/proc/{p}/task").glob("*"):
            try:
                todo.extend(int(c) for c in (task / "children").read_text().split())
            except (OSError, ValueError):
                continue
    return out


def dump_stacks(stage_dir: Path, log, wait_s: float = 10.0, settle_s: float = 1.0) -> list[int]:
    """Every running rank's Python stacks into `log` (the stage log, opened in binary append mode): SIGUSR1 to each
    rank (faulthandler writes all its threads to stacks.rank<R>.txt), then SIGCONT, so that a stopped rank handles
    the pending signal too. A rank's file is read once it has stopped growing for `settle_s` (at most `wait_s` in
    all), so that a slow rank's last threads are not cut off. Only the ranks on this host: a pid of another node
    means another process here. Returns the ranks whose stacks were written."""
    here = socket.gethostname()
    running = {r: rec["pid"] for r, rec in rank_records(stage_dir).items()
               if rec.get("status") == "running" and rec.get("host") == here}
    for pid in running.values():
        for sig in (signal.SIGUSR1, signal.SIGCONT):
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                break
    # faulthandler writes a thread at a time and marks no end, and a rank just continued from SIGSTOP on a loaded
    # host can take a while: a file counts as written once it is non-empty and has not grown for `settle_s`.
    deadline = time.monotonic() + wait_s
    seen: dict[int, tuple[int, float]] = {}
    dumped = []
    while time.monotonic() < deadline:
        now = time.monotonic()
        for r in running:
            size = _stacks_size(stacks_path(stage_dir, r))
            if seen.get(r, (None,))[0] != size:
                seen[r] = (size, now)
        dumped = [r for r, (size, since) in seen.items() if size and now - since >= settle_s]
        if len(dumped) == len(running):
            break
        time.sleep(0.1)
    for r in sorted(running):
        p = stacks_path(stage_dir, r)
        text = p.read_text(errors="replace") if p.exists() else ""
        log.write(f"[ringctl] rank {r} (pid {running[r]}) Python stacks:\n".encode())
        log.write((text if text.strip() else "  (none written within the wait)\n").encode())
    log.flush()
    return dumped


def _stacks_size(p: Path) -> int:
    try:
        return p.stat().st_size
    except OSError:
        return 0


def kill_tree(pids: list[int]) -> None:
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            continue


@dataclass(frozen=True)
class Recovery:
    """How the runner recovers a stage: the stage's `launch` section over the recipe's `resources` defaults."""

    retries: int = 0
    retry_backoff_s: float = 10.0
    hang_timeout: float | None = None

    @classmethod
    def of(cls, stage_cfg, resources) -> Recovery:
        from ringctl.recipe.base import RECOVERY_KEYS

        return cls(**{k: getattr(resources, k) if getattr(stage_cfg.launch, k) is None else getattr(stage_cfg.launch, k)
                      for k in RECOVERY_KEYS})

    def backoff(self, retry: int) -> float:
        """Seconds before retry number `retry` (1, 2, ...): retry_backoff_s, doubled at each next one."""
        return self.retry_backoff_s * 2 ** (retry - 1)
