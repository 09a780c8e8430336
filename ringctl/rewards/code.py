"""Code: run the response's program against every test in the sandbox; reward 1 only if all pass.

Reference forms:
    {"mode": "unittest", "test": "def check(candidate): ...", "entry_point": "f"}   (HumanEval; "mode" optional)
    {"mode": "function", "fn_name": "f", "tests": [{"args": [...], "expected": ...}, ...]}
    {"mode": "stdio", "tests": [{"input": "...", "output": "..."}, ...]}  (normalised whitespace, float tolerance)

For unittest/function modes the verdict comes from a harness in the sandboxed interpreter: it runs the
program, then the tests, and only then reads a random nonce from a pipe and writes "PASS <nonce>" to a second
pipe opened before the program ran, and leaves with os._exit (no atexit hook of the program runs). Exit
status and output are never trusted: an early exit, a crash, a fake "PASS" print or a timeout all give 0.
Limitation: a program that deliberately drains the nonce pipe through /proc/self/fd and forges the verdict
would defeat this; the harness and the program share one interpreter.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import tempfile
from pathlib import Path
from typing import Any

from ringctl.rewards.base import RewardResult, answer_region, failed, passed
from ringctl.rewards.sandbox import SandboxConfig, run, run_python

FLOAT_TOLERANCE = 1e-6

HARNESS = r'''
import os, sys, json
_verdict_fd, _nonce_fd = int(sys.argv[1]), int(sys.argv[2])
_mode = sys.argv[3]
_program = open("program.py", encoding="utf-8").read()
_tests = open("tests.json", encoding="utf-8").read()
os.remove("tests.json")
def _run():
    g = {"__name__": "__main__", "__builtins__": __builtins__}
    exec(compile(_program, "solution.py", "exec"), g)
    spec = json.loads(_tests)
    if _mode == "unittest":
        exec(compile(spec["test"], "test.py", "exec"), g)
        g["check"](g[spec["entry_point"]])
    else:
        fn = g[spec["fn_name"]]
        for case in spec["tests"]:
            got = fn(*case["args"])
            if isinstance(got, tuple):
                got = list(got)
            if json.loads(json.dumps(got)) != case["expected"]:
                raise AssertionError("wrong result")
_run()
_nonce = os.read(_nonce_fd, 64)
os.write(_verdict_fd, b"PASS " + _nonce)
os._exit(0)
'''


def extract_code(response: str) -> str | None:
    region = answer_region(response)
    if region is None:
        return None
    blocks = re.findall(r"```(?:python|py|Python)?[^\n]*\n(.*?)```", region, re.S)
    return blocks[-1] if blocks else region


def _spec(reference: Any) -> dict:
    if isinstance(reference, str):
        reference = json.loads(reference)
    if not isinstance(reference, dict):
        raise ValueError("code reference must be a dict")
    mode = reference.get("mode") or ("unittest" if "test" in reference else None)
    if mode == "unittest" and not {"test", "entry_point"} <= set(reference):
        raise ValueError("unittest reference needs 'test' and 'entry_point'")
    if mode == "function" and not ("fn_name" in reference and isinstance(reference.get("tests"), list)):
        raise ValueError("function reference needs 'fn_name' and 'tests'")
    if mode == "stdio" and not isinstance(reference.get("tests"), list):
        raise ValueError("stdio reference needs 'tests'")
    if mode not in ("unittest", "function", "stdio"):
        raise ValueError(f"unknown code mode {mode!r}")
    return {**reference, "mode": mode}


def _same_output(got: str, expected: str) -> bool:
    a, b = got.split(), str(expected).split()
    if len(a) != len(b):
        return False
    for x, y in zip(a, b, strict=True):
        if x == y:
            continue
        try:
            if abs(float(x) - float(y)) > FLOAT_TOLERANCE * max(1.0, abs(float(y))):
                return False
        except ValueError:
            return False
    return True


def run_harness(code: str, spec: dict, config: SandboxConfig) -> tuple[bool, str, str]:
    """(passed, reason, isolation) for unittest/function modes."""
    workdir = Path(tempfile.mkdtemp(prefix="ringctl-code-"))
    verdict_r, verdict_w = os.pipe()
    nonce_r, nonce_w = os.pipe()
    nonce = secrets.token_hex(16).encode()
    try:
        (workdir / "program.py").write_text(code, encoding="utf-8")
        (workdir / "tests.json").write_text(json.dumps(spec), encoding="utf-8")
        (workdir / "harness.py").write_text(HARNESS, encoding="utf-8")
        os.write(nonce_w, nonce)
        os.close(nonce_w)
        nonce_w = -1
        result = run([config.python, "-I", "harness.py", str(verdict_w), str(nonce_r), spec["mode"]], workdir,
                     config, pass_fds=(verdict_w, nonce_r))
        os.close(verdict_w)
        verdict_w = -1
        os.set_blocking(verdict_r, False)
        try:
            verdict = os.read(verdict_r, 256)
        except BlockingIOError:
            verdict = b""
        if verdict == b"PASS " + nonce:
            return True, "all tests passed", result.isolation
        if result.timed_out:
            return False, "timed out", result.isolation
        tail = result.stderr.strip().splitlines()[-1:] or [f"exit status {result.returncode}"]
        return False, f"tests did not pass: {tail[0][:200]}", result.isolation
    finally:
        for fd in (verdict_r, verdict_w, nonce_r, nonce_w):
            if fd >= 0:
                try:
                    os.close(fd)
                except OSError:
                    pass
        shutil.rmtree(workdir, ignore_errors=True)


def verify(response: str, reference: Any, **meta: Any) -> RewardResult:
    try:
        spec = _spec(reference)
    except (ValueError, TypeError) as e:
        return failed(f"bad reference: {e}")
    code = extract_code(response)
    if not code or not code.strip():
        return failed("no code in the response")
    config = SandboxConfig(**meta["sandbox"]) if isinstance(meta.get("sandbox"), dict) else SandboxConfig()
    if spec["mode"] == "stdio":
        for i, case in enumerate(spec["tests"]):
            result = run_python(code, config, stdin=str(case.get("input", "")))
            if result.timed_out or not _same_output(result.stdout, case.get("output", "")):
                return failed(f"test {i + 1} failed" + (" (timeout)" if result.timed_out else ""),
                              isolation=result.isolation)
        return passed("all tests passed", isolation=result.isolation if spec["tests"] else "none")
    ok, reason, isolation = run_harness(code, spec, config)
    return passed(reason, isolation=isolation) if ok else failed(reason, isolation=isolation)


def check_reference(reference: Any, solution: str | None = None, **meta: Any) -> tuple[bool, str]:
    """The reference parses and, when meta carries the reference solution, that solution passes its own tests."""
    try:
        _spec(reference)
    except (ValueError, TypeError) as e:
        return False, str(e)
    if solution is None:
        return True, "ok (no reference solution to run)"
    result = verify(solution, reference, **meta)
    return (True, "reference solution passes") if result.score == 1.0 else (False, f"solution fails: {result.reason}")
