"""The retry rule (which failures are retried), the recovery settings and the fingerprint staying unchanged."""

from __future__ import annotations

from ringctl.errors import BadInput
from ringctl.pipeline import watchdog


def _ranks(tmp_path, *outcomes):
    """One record per rank: "killed" (started, never exited) or an exit (code, exception or None)."""
    for rank, outcome in enumerate(outcomes):
        watchdog.rank_started(tmp_path, rank)
        if outcome != "killed":
            watchdog.rank_exited(tmp_path, rank, *outcome)
    return tmp_path


PEER_LOST = RuntimeError("[../gloo/transport/tcp/pair.cc:553] Connection closed by peer [127.0.0.1]:20869")


def test_a_killed_rank_is_retried_even_when_its_peer_saw_the_connection_drop(tmp_path):
    retry, why = watchdog.retry_cause(_ranks(tmp_path, (1, PEER_LOST), "killed"), 1)
    assert retry and "rank(s) 1 died without exiting" in why


def test_a_real_error_on_any_rank_is_not_retried_whatever_else_happened(tmp_path):
    retry, why = watchdog.retry_cause(_ranks(tmp_path, "killed", (1, ValueError("bad shape"))), 1)
    assert not retry and "rank 1 reported an error (ValueError: bad shape)" in why
    retry, why = watchdog.retry_cause(_ranks(tmp_path / "b", (1, BadInput("no such file"))), 1)
    assert not retry and "bad input" in why


def test_only_lost_peers_are_retried_and_no_rank_at_all_is_not(tmp_path):
    assert watchdog.retry_cause(_ranks(tmp_path, (1, PEER_LOST), (1, PEER_LOST)), 1)[0]
    retry, why = watchdog.retry_cause(tmp_path / "none", 1)
    assert not retry and "before any rank started" in why
    assert watchdog.retry_cause(tmp_path / "none", -9)[0]  # the launcher itself killed


def test_recovery_settings_stage_over_recipe_and_not_in_the_fingerprint(monkeypatch):
    from ringctl.pipeline.fingerprint import stage_fingerprint
    from ringctl.recipe.loader import load_resolved
    from tests.helpers import PLUGINS

    monkeypatch.syspath_prepend(str(PLUGINS))
    text = """
name: r
resources: {retries: 2, retry_backoff_s: 3, hang_timeout: 600}
stages:
  a: {kind: toy_stages.counter, launch: {retries: 5}}
  b: {kind: toy_stages.counter}
"""
    recipe = load_resolved(text, "r.yaml").recipe
    a = watchdog.Recovery.of(recipe.stages["a"], recipe.resources)
    assert (a.retries, a.retry_backoff_s, a.hang_timeout) == (5, 3.0, 600.0)
    assert [a.backoff(n) for n in (1, 2, 3)] == [3.0, 6.0, 12.0]
    assert watchdog.Recovery.of(recipe.stages["b"], recipe.resources).retries == 2
    plain = load_resolved(text.replace("launch: {retries: 5}", "steps: 5").replace(
        "resources: {retries: 2, retry_backoff_s: 3, hang_timeout: 600}\n", ""), "r.yaml").recipe
    fp = lambda r: stage_fingerprint("a", r.stages["a"], r, {}).fingerprint  # noqa: E731
    assert fp(recipe) == fp(plain)


_RANK_SCRIPT = """
import faulthandler, signal, sys, threading, time
from pathlib import Path
from ringctl.pipeline import watchdog
stage_dir, rank = Path(sys.argv[1]), int(sys.argv[2])
watchdog.rank_started(stage_dir, rank)
stacks = open(watchdog.stacks_path(stage_dir, rank), "w")
faulthandler.register(signal.SIGUSR1, file=stacks, all_threads=True)
def deep(n):
    return deep(n - 1) if n else time.sleep(600)
for _ in range(8):
    threading.Thread(target=deep, args=(40,), daemon=True).start()
def main_loop_of_rank():
    print("ready", flush=True)
    time.sleep(600)
main_loop_of_rank()
"""


def test_stacks_of_a_running_and_a_stopped_rank_are_written_whole(tmp_path):
    """The hang watchdog's dump: SIGUSR1 then SIGCONT to each rank; the stopped one's stacks come whole too (every
    thread, down to the main thread's outermost frame), each under its own header."""
    import signal
    import subprocess
    import sys

    watchdog.ranks_dir(tmp_path).mkdir(parents=True, exist_ok=True)
    procs = [subprocess.Popen([sys.executable, "-c", _RANK_SCRIPT, str(tmp_path), str(r)], stdout=subprocess.PIPE,
                              text=True) for r in (0, 1)]
    try:
        for p in procs:
            assert p.stdout.readline().strip() == "ready"
        procs[1].send_signal(signal.SIGSTOP)
        log_path = tmp_path / "stage.log"
        with open(log_path, "ab") as log:
            assert watchdog.dump_stacks(tmp_path, log) == [0, 1]
        text = log_path.read_text()
        for r, p in enumerate(procs):
            section = text.split(f"[ringctl] rank {r} (pid {p.pid}) Python stacks:\n")[1].split("[ringctl]")[0]
            assert section.count("(most recent call first)") == 9, section
            assert section.count("in deep") >= 8 * 40, section
            assert "in main_loop_of_rank" in section and "in <module>" in section, section
    finally:
        for p in procs:
            p.kill()
            p.wait()
