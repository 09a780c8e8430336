"""Code: run the response's program against every test in the sandbox; reward 1 only if all pass.

Reference forms:
    {"mode": "unittest", "test": "def check(candidate): ...", "entry_point": "f"}   (HumanEval; "mode" optional)
    {"mode": "function", "fn_name": "f", "tests": [{"args": [...], "expected": ...}, ...]}
    {"mode": "stdio", "tests": [{"input": "...", "output": "..."}, ...]}  (normalised whitespace, float tolerance)

For unittest/function modes the verdict comes from a harness in the sandboxed interpreter: it runs the
program, then the tests, and only then reads a random nonce from a pipe and writes "PASS <nonce>" to a second
pipe opened before the program ran, and leaves with os._exit (no atexit hook of the program runs). Exit
status and output are never trusted: an early exit, a crash, a fake "PASS" print or a timeout all give 0.

Results are compared as plain values: every value the candidate returns is rebuilt from objects whose type is
exactly a builtin one (checked with `is`), so an object that overrides __eq__, __ne__, __bool__, __hash__ or
__class__, or a subclass of str/int/list, fails the test instead of comparing equal. The tests run with their own
copy of the builtins; after the program's top level and after every call of the candidate, trace/profile hooks are
cleared, whatever the program rebound in already-imported modules (math.isclose = ..., builtins.abs = ...) is put
back, and a program that left threads running fails.
Limitation: the harness and the program share one interpreter, so a program that tampers with the interpreter
itself (ctypes, gc walks to the harness's objects, draining the nonce pipe through /proc/self/fd) could still forge
the verdict; so can one that redefines helpers the tests call from the prompt's own code (HumanEval/32's poly).
"""

from __future__ import annotations

import json
import os
import re
import secrets
from pathlib import Path
from typing import Any

from ringctl.rewards.base import RewardResult, answer_region, failed, passed
from ringctl.rewards.sandbox import UNSAFE, SandboxConfig, run, run_python, scratch_dir

FLOAT_TOLERANCE = 1e-6

HARNESS = r'''
import builtins, json, os, sys
_verdict_fd, _nonce_fd, _mode = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
with open("program.py", encoding="utf-8") as _f:
    _program = _f.read()
with open("tests.json", encoding="utf-8") as _f:
    _spec = json.loads(_f.read())
os.remove("tests.json")
# everything the verdict depends on is bound now, before the program can patch builtins or modules
_read, _write, _exit, _settrace, _setprofile, _frames = os.read, os.write, os._exit, sys.settrace, sys.setprofile, \
    sys._current_frames
_dumps, _loads, _type, _len, _list, _tuple, _dict, _set, _frozenset, _items, _isinstance = json.dumps, json.loads, \
    type, len, list, tuple, dict, set, frozenset, dict.items, isinstance
_ModuleType = _type(sys)
_SCALARS = (type(None), bool, int, float, complex, str, bytes)
_pristine_builtins = dict(builtins.__dict__)

def _snapshot():
    return {name: (m, _dict(m.__dict__)) for name, m in _list(sys.modules.items()) if _isinstance(m, _ModuleType)}

def _restore(snap):
    # undo what the program rebound or deleted in modules the tests use (math.isclose = ..., builtins.abs = ...)
    for name, (module, attrs) in _items(snap):
        live = module.__dict__
        for key, value in _items(attrs):
            if key not in live or live[key] is not value:
                live[key] = value

def _alone():
    if _len(_frames()) != 1:
        raise AssertionError("the program left threads running")

def _plain(x, depth=0):
    # the result rebuilt from values whose type is exactly a builtin one (`is`, never ==: a metaclass can fake
    # equality): an object of the program's own class (__eq__, __bool__, __class__, a str or int subclass, ...)
    # fails the test instead of comparing equal to anything
    t = _type(x)
    if depth > 100:
        raise AssertionError("result nested too deeply")
    for s in _SCALARS:
        if t is s:
            return x
    if t is list or t is tuple:
        items = [_plain(v, depth + 1) for v in x]
        return items if t is list else _tuple(items)
    if t is dict:
        return {_plain(k, depth + 1): _plain(v, depth + 1) for k, v in _items(x)}
    if t is set or t is frozenset:
        items = [_plain(v, depth + 1) for v in x]
        return _set(items) if t is set else _frozenset(items)
    raise AssertionError("the result is not a plain builtin value")

def _guard(fn, snap):
    def candidate(*args, **kwargs):
        try:
            result = fn(*args, **kwargs)
        finally:
            _settrace(None)
            _setprofile(None)
            _restore(snap)
        _alone()
        return _plain(result)
    return candidate

def _run():
    before = _snapshot()
    g = {"__name__": "__main__", "__builtins__": builtins}
    exec(compile(_program, "solution.py", "exec"), g)
    _settrace(None)
    _setprofile(None)
    _restore(before)
    _alone()
    if _mode == "unittest":
        for name in _list(sys.modules):  # modules first imported by the program: the tests import fresh ones
            if name not in before:
                del sys.modules[name]
        t = _dict(g)
        t["__builtins__"] = _dict(_pristine_builtins)  # the tests' own builtins, out of the program's reach
        exec(compile(_spec["test"], "test.py", "exec"), t)
        t["check"](_guard(g[_spec["entry_point"]], _snapshot()))
    else:
        fn = _guard(g[_spec["fn_name"]], _snapshot())
        for case in _spec["tests"]:
            got = fn(*case["args"])
            if _type(got) is tuple:
                got = _list(got)
            if _loads(_dumps(got)) != case["expected"]:
                raise AssertionError("wrong result")
_run()
_settrace(None)
_setprofile(None)
_alone()
_nonce = _read(_nonce_fd, 64)
_write(_verdict_fd, b"PASS " + _nonce)
_exit(0)
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


def sandbox_config(meta: dict) -> SandboxConfig:
    """The recipe's sandbox settings (the stage process's environment), with the item's `sandbox` meta on top. A
    data row may change limits, never turn isolation off: only a recipe can choose the unsafe backend."""
    base = SandboxConfig.from_env()
    extra = meta.get("sandbox")
    if not isinstance(extra, dict):
        return base
    merged = {**base.model_dump(exclude_unset=True), **extra}
    if extra.get("backend") == UNSAFE and base.backend != UNSAFE:
        merged["backend"] = base.backend
    return SandboxConfig(**merged)


def run_harness(code: str, spec: dict, config: SandboxConfig) -> tuple[bool, str, str]:
    """(passed, reason, isolation) for unittest/function modes."""
    with scratch_dir("code") as workdir:
        return _run_harness_in(workdir, code, spec, config)


def _run_harness_in(workdir: Path, code: str, spec: dict, config: SandboxConfig) -> tuple[bool, str, str]:
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
        result = run([config.interpreter, "-I", "harness.py", str(verdict_w), str(nonce_r), spec["mode"]], workdir,
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
        if result.isolation == "none":
            return False, f"not run: {result.stderr}", result.isolation
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


def verify(response: str, reference: Any, **meta: Any) -> RewardResult:
    try:
        spec = _spec(reference)
    except (ValueError, TypeError) as e:
        return failed(f"bad reference: {e}")
    code = extract_code(response)
    if not code or not code.strip():
        return failed("no code in the response")
    config = sandbox_config(meta)
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
