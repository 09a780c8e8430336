"""tests.helpers.wait_for: returns what the condition found; fails naming the state when the time runs out or when
the process it watches exits first."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.helpers import wait_for


def test_returns_the_condition_value():
    calls = iter([None, [], ["step-1"]])
    assert wait_for(lambda: next(calls), "a state", timeout=60, interval=0) == ["step-1"]


def test_fails_naming_the_state_on_timeout():
    with pytest.raises(AssertionError, match=r"waiting for the step-6 state: not within 0.05 s"):
        wait_for(lambda: False, "the step-6 state", timeout=0.05, interval=0.01)


def test_fails_when_the_process_exits_first_with_its_code_and_stderr():
    proc = subprocess.Popen([sys.executable, "-c", "import sys; sys.stderr.write('boom'); sys.exit(3)"],
                            stderr=subprocess.PIPE, text=True)
    proc.wait()
    with pytest.raises(AssertionError, match=r"waiting for stage first completed: the process exited \(3\) first; "
                                             r"its stderr ends:\nboom"):
        wait_for(lambda: False, "stage first completed", timeout=60, proc=proc)


def test_a_state_reached_just_before_the_exit_counts():
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    seen = iter([False, "done"])  # false before poll() sees the exit, true when checked again after it
    assert wait_for(lambda: next(seen), "the result", timeout=60, proc=proc) == "done"
