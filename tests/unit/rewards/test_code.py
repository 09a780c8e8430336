"""Code verifier and sandbox: real HumanEval items, hostile programs score 0 and leave nothing behind."""

import gzip
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from ringctl.rewards import sandbox, score, score_detailed, verify_reference
from ringctl.rewards.sandbox import SandboxConfig, run_python

FAST = {"wall_seconds": 3.0, "cpu_seconds": 2, "memory_mb": 512}
REF = {"mode": "unittest", "entry_point": "add",
       "test": "def check(candidate):\n    assert candidate(2, 3) == 5\n    assert candidate(-1, 1) == 0\n"}
GOOD = "def add(a, b):\n    return a + b\n"
MARKER = Path(tempfile.gettempdir()) / "ringctl-hostile-marker"

HOSTILE = {
    "sys_exit": GOOD.replace("+", "-") + "import sys\nsys.exit(0)\n",
    "os_exit": "import os\nos._exit(0)\n",
    "fake_marker": "print('PASS'); print('all tests passed')\ndef add(a, b):\n    return 0\n",
    "redefine_check": "def add(a, b):\n    return 0\ndef check(c):\n    return True\n",
    "patch_builtins": "import builtins\nbuiltins.AssertionError = Exception\ndef add(a, b):\n    return 0\n",
    "swallow_exceptions": "import sys\nsys.excepthook = lambda *a: None\nimport atexit, os\n"
                          "atexit.register(lambda: os._exit(0))\ndef add(a, b):\n    return 0\n",
    "kill_parent": "import os, signal\nos.kill(os.getppid(), signal.SIGKILL)\nos.kill(1, signal.SIGKILL)\n"
                   "def add(a, b):\n    return 0\n",
    "fork_bomb": "import os\nwhile True:\n    try:\n        os.fork()\n    except OSError:\n        pass\n",
    "sleep_forever": "import time\ntime.sleep(10**6)\n" + GOOD,
    "setsid_sleeper": "import os, time\nif os.fork() == 0:\n    os.setsid()\n    time.sleep(10**6)\n"
                      "os._exit(0)\n",
    "allocate": "x = []\nwhile True:\n    x.append(bytearray(10**7))\n",
    "write_outside": f"open({str(MARKER)!r}, 'w').write('x')\nopen('/work/escape.txt', 'w')\n" + GOOD,
    "socket": "import socket\nsocket.create_connection(('1.1.1.1', 80), timeout=1)\n" + GOOD,
}


def _processes() -> set[int]:
    return {int(p) for p in os.listdir("/proc") if p.isdigit()}


# the fork bomb takes ~15 s on 2 shared cores before the namespace is torn down: slow-marked
@pytest.mark.parametrize("name", [pytest.param(n, marks=pytest.mark.slow) if n == "fork_bomb" else n
                                  for n in sorted(HOSTILE)])
def test_hostile_program_scores_zero(name):
    res = score_detailed("code", f"```python\n{HOSTILE[name]}```", REF, sandbox=FAST)
    assert res.score == 0.0, (name, res)


def _scratch() -> set[Path]:
    return set(Path(tempfile.gettempdir()).glob("ringctl-code-*"))


def test_hostile_programs_leave_nothing_behind():
    before, scratch_before = _processes(), _scratch()
    for name in ("setsid_sleeper", "sleep_forever", "write_outside", "kill_parent"):
        score("code", HOSTILE[name], REF, sandbox={**FAST, "wall_seconds": 1.5})
    stray = []
    for pid in _processes() - before:
        try:
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            continue
        if b"harness.py" in cmd or b"program.py" in cmd or b"bwrap" in cmd:
            stray.append(cmd)
    assert not stray
    assert not MARKER.exists() and not Path("/work/escape.txt").exists()
    assert _scratch() <= scratch_before  # other processes' (killed scorers') leftovers are not this test's


def test_a_killed_scorers_directory_is_swept_by_the_next_one(tmp_path):
    """A scorer SIGKILLed while a program runs (a chaos kill mid-reward) leaves its directory; the next scorer
    removes it once it is stale, and never removes a live process's or a fresh one."""
    dead = subprocess.Popen([sys.executable, "-c", ""])
    dead.wait()
    old = time.time() - sandbox.STALE_AFTER_S - 60
    gone = tmp_path / f"ringctl-code-{dead.pid}-abc"
    fresh = tmp_path / f"ringctl-code-{dead.pid}-def"
    mine = tmp_path / f"ringctl-sandbox-{os.getpid()}-ghi"
    other = tmp_path / "ringctl-selection-curve-work-xyz"
    for d in (gone, fresh, mine, other):
        d.mkdir()
        (d / "program.py").write_text("x = 1\n")
    for d in (gone, mine, other):
        os.utime(d, (old, old))
    assert sandbox.sweep_stale_scratch(tmp_path) == [gone]
    assert not gone.exists() and fresh.exists() and mine.exists() and other.exists()
    with sandbox.scratch_dir("code") as d:
        assert d.name.startswith(f"ringctl-code-{os.getpid()}-") and d.is_dir()
    assert not d.exists()


def test_correct_program_and_modes():
    assert score_detailed("code", GOOD, REF, sandbox=FAST).meta["isolation"] in ("bwrap", "unshare")
    assert score("code", f"<think>\nadd them\n</think>\n```python\n{GOOD}```", REF) == 1.0
    fn = {"mode": "function", "fn_name": "add", "tests": [{"args": [1, 2], "expected": 3}]}
    assert score("code", GOOD, fn) == 1.0 and score("code", GOOD.replace("+", "*"), fn) == 0.0
    stdio = {"mode": "stdio", "tests": [{"input": "3\n", "output": "0.3333333"}, {"input": "4", "output": "0.25"}]}
    assert score("code", "print(1 / int(input()))", stdio) == 1.0
    assert score("code", "print(2 / int(input()))", stdio) == 0.0


def test_reference_check_runs_the_solution():
    assert verify_reference("code", REF, solution=GOOD) == (True, "reference solution passes")
    assert verify_reference("code", REF, solution="def add(a, b):\n    return 1\n")[0] is False
    assert verify_reference("code", {"mode": "unittest"})[0] is False


def test_sandbox_output_cap_and_clean_env():
    res = run_python("import os\nprint(sorted(os.environ))\nprint('x' * 10**6)", SandboxConfig(max_output_bytes=1000))
    assert len(res.stdout) <= 1000 and "'PATH'" in res.stdout and "HF_HUB_OFFLINE" not in res.stdout


def test_unshare_fallback_runs_when_permitted():
    from ringctl.rewards.sandbox import probe

    if probe("unshare") is not None:
        pytest.skip(f"the unshare backend cannot isolate here: {probe('unshare')}")
    res = score_detailed("code", GOOD, REF, sandbox={**FAST, "backend": "unshare"})
    assert res.score == 1.0 and res.meta["isolation"] == "unshare"


def _humaneval(benchmarks):
    with gzip.open(benchmarks / "humaneval.jsonl.gz", "rt", encoding="utf-8") as f:
        return [json.loads(line) for line in f]


def test_some_humaneval_solutions(benchmarks):
    for row in _humaneval(benchmarks)[:5]:
        ref = {"test": row["test"], "entry_point": row["entry_point"]}  # data_filter's preset: no "mode"
        assert score("code", row["prompt"] + row["canonical_solution"], ref) == 1.0, row["task_id"]
        assert score("code", row["prompt"] + "    return None\n", ref) == 0.0, row["task_id"]


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["auto", "unshare"])
def test_all_humaneval_canonical_solutions(benchmarks, backend):
    """The plain-value comparison (reward hacks score 0, tests/unit/rewards/test_sandbox.py) keeps every canonical
    solution passing, under either isolating backend."""
    from ringctl.rewards.sandbox import probe

    if backend != "auto" and probe(backend) is not None:
        pytest.skip(f"{backend}: {probe(backend)}")
    rows = _humaneval(benchmarks)
    assert len(rows) == 164
    failures = [r["task_id"] for r in rows
                if score("code", r["prompt"] + r["canonical_solution"], {"test": r["test"],
                                                                         "entry_point": r["entry_point"]},
                         sandbox={"backend": backend}) != 1.0]
    assert failures == []


def test_interpreter_under_tmp_is_visible_inside_the_private_tmp(tmp_path):
    """A checkout or virtual environment under /tmp (CI clones often are) must not vanish behind the sandbox's
    private /tmp: its environment is bound read-only into the sandbox."""
    import os
    import sys

    from ringctl.rewards.sandbox import SandboxConfig, run_python

    assert str(tmp_path).startswith("/tmp/")
    (tmp_path / "env" / "bin").mkdir(parents=True)
    python = tmp_path / "env" / "bin" / "python"
    os.symlink(sys.executable, python)
    result = run_python("print(6 * 7)", SandboxConfig(python=str(python)))
    assert result.returncode == 0 and result.stdout.strip() == "42", result
