"""The sandbox fails closed: without bubblewrap the `unshare` backend isolates the file system too; without either,
nothing runs unless the recipe names the unsafe backend; results are compared as plain values (reward hacks)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from ringctl.rewards import code, sandbox, score_detailed
from ringctl.rewards.sandbox import SandboxConfig, SandboxUnavailable, choose_backend, probe, run_python

REPO = Path(__file__).resolve().parents[3]
REF = {"mode": "unittest", "entry_point": "add",
       "test": "import math\ndef check(candidate):\n    assert candidate(2, 3) == 5\n    assert not (candidate(-1, 1) != 0)\n"
               "    assert abs(candidate(1, 1) - 2) < 1e-9\n    assert math.isclose(candidate(0.5, 0.25), 0.75)\n"}
FN = {"mode": "function", "fn_name": "add", "tests": [{"args": [1, 2], "expected": 3}, {"args": [2, 2], "expected": 4}]}
GOOD = "def add(a, b):\n    return a + b\n"
EQ = "    def __eq__(s, o): return True\n    def __ne__(s, o): return False\n    __hash__ = object.__hash__\n"
HACKS = {
    "always_equal": "class A:\n" + EQ + "    def __sub__(s, o): return 0\n    __rsub__ = __sub__\n"
                    "    def __abs__(s): return 0\n    def __float__(s): return 0.75\ndef add(a, b):\n    return A()\n",
    "int_subclass": "class I(int):\n" + EQ + "def add(a, b):\n    return I(0)\n",
    "str_subclass": "class S(str):\n" + EQ + "def add(a, b):\n    return S('x')\n",
    "fake_class": "class A:\n    __class__ = int\n" + EQ + "def add(a, b):\n    return A()\n",
    "metaclass_eq": "class M(type):\n" + EQ + "class A(metaclass=M):\n" + EQ + "def add(a, b):\n    return A()\n",
    "truthy": "class B:\n    def __bool__(s): return True\n    def __eq__(s, o): return B()\n    def __ne__(s, o): return B()\n"
              "def add(a, b):\n    return B()\n",
    "inside_a_list": "class A:\n" + EQ + "def add(a, b):\n    return [A()][0] if False else (A(),)[0]\n",
    "patch_builtins_and_math": "import builtins, math\nbuiltins.abs = lambda x: 0\n"
                               "math.isclose = lambda *a, **k: True\ndef add(a, b):\n    return 5\n",
    "patch_during_call": "def add(a, b):\n    import builtins, math, json\n    builtins.abs = lambda x: 0\n"
                         "    math.isclose = lambda *a, **k: True\n    json.loads = lambda s: 3\n    return 5\n",
    "trace_hook": "import sys\ndef tr(frame, event, arg):\n    return tr\ndef add(a, b):\n"
                  "    sys._getframe(1).f_trace = tr\n    sys.settrace(tr)\n    return 0\n",
    "background_thread": "import threading, math\ndef loop():\n    while True:\n        math.isclose = lambda *a, **k: True\n"
                         "threading.Thread(target=loop, daemon=True).start()\ndef add(a, b):\n    return a + b\n",
}


@pytest.fixture(autouse=True)
def _fresh_probes():
    sandbox._PROBES.clear()
    yield
    sandbox._PROBES.clear()


def _hide(monkeypatch, tmp_path, keep: tuple[str, ...]) -> None:
    """PATH holds only `keep` (bubblewrap hidden, like on a machine without it)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    for tool in keep:
        os.symlink(shutil.which(tool), bin_dir / tool)
    monkeypatch.setenv("PATH", str(bin_dir))


def _unshare_works() -> bool:
    return bool(shutil.which("unshare")) and subprocess.run(["unshare", "--user", "--map-root-user", "--mount", "true"],
                                                            capture_output=True).returncode == 0


@pytest.mark.parametrize("name", sorted(HACKS))
def test_reward_hacks_score_zero(name):
    assert score_detailed("code", GOOD, REF).score == 1.0 and score_detailed("code", GOOD, FN).score == 1.0
    for ref in (REF, FN):
        res = score_detailed("code", HACKS[name], ref)
        assert res.score == 0.0, (name, ref["mode"], res)


@pytest.fixture
def host_dir():
    """A directory on the host's root file system (not under the sandbox's private /tmp), removed afterwards."""
    d = Path(tempfile.mkdtemp(prefix="ringctl-sandbox-test-", dir="/var/tmp"))
    (d / "precious.txt").write_text("keep me")
    yield d
    shutil.rmtree(d, ignore_errors=True)


def _hostile(host_dir: Path) -> str:
    return f"""
import ctypes, os, shutil
libc = ctypes.CDLL(None, use_errno=True)
libc.mount(b"none", b"/", None, 32 | 4096, None)          # try to remount / read-write
libc.umount2(b"/tmp", 2)                                  # and to uncover the host's /tmp
for attempt in (lambda: open({str(host_dir / 'escape.txt')!r}, "w").write("x"),
                lambda: os.remove({str(host_dir / 'precious.txt')!r}),
                lambda: shutil.rmtree({str(host_dir)!r}),
                lambda: os.chmod({str(host_dir)!r}, 0o777)):
    try:
        attempt()
    except OSError:
        pass
def add(a, b):
    return a + b
"""


def _untouched(host_dir: Path) -> bool:
    return sorted(p.name for p in host_dir.iterdir()) == ["precious.txt"] and \
        (host_dir / "precious.txt").read_text() == "keep me" and (host_dir.stat().st_mode & 0o777) != 0o777


def test_without_bubblewrap_the_unshare_backend_isolates(monkeypatch, tmp_path, host_dir):
    if not _unshare_works():
        pytest.skip("unprivileged user + mount namespaces are not allowed here")
    _hide(monkeypatch, tmp_path, ("unshare", "prlimit"))
    assert probe("bwrap") == "`bwrap` is not installed"
    assert choose_backend(SandboxConfig()) == "unshare"
    res = score_detailed("code", _hostile(host_dir), REF)
    assert res.meta["isolation"] == "unshare" and res.score == 1.0  # it ran, its tests pass, it wrote nothing
    assert _untouched(host_dir)
    inside = run_python("import os, socket\nprint(os.getuid(), sorted(os.listdir('/dev')))\n"
                        "socket.create_connection(('1.1.1.1', 80), timeout=1)")
    assert inside.stdout.split()[0] == "1000" and "vda" not in inside.stdout and "sda" not in inside.stdout
    assert "Network is unreachable" in inside.stderr or "OSError" in inside.stderr


@pytest.mark.parametrize("backend", ["bwrap", "unshare"])
def test_isolating_backends_keep_the_host_read_only(backend, host_dir):
    if probe(backend) is not None:
        pytest.skip(f"{backend} does not work here: {probe(backend)}")
    res = score_detailed("code", _hostile(host_dir), REF, sandbox={"backend": backend})
    assert res.meta["isolation"] == backend and res.score == 1.0
    assert _untouched(host_dir)


def test_as_a_user_without_root_or_bubblewrap(tmp_path, host_dir):
    """No capabilities at all (uid 1000 in a user namespace of its own), bubblewrap hidden: still isolated."""
    if not _unshare_works() or subprocess.run(["unshare", "-U", "--map-user=1000", "--map-group=1000", "true"],
                                              capture_output=True).returncode:
        pytest.skip("user namespaces are not allowed here")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in ("unshare", "prlimit"):
        os.symlink(shutil.which(tool), bin_dir / tool)
    script = ("import os\nfrom ringctl.rewards import score_detailed\n"
              f"res = score_detailed('code', {_hostile(host_dir)!r}, {REF!r})\n"
              "print(os.getuid(), res.meta['isolation'], res.score)\n")
    proc = subprocess.run(["unshare", "-U", "--map-user=1000", "--map-group=1000", sys.executable, "-c", script],
                          capture_output=True, text=True, cwd=REPO, env={**os.environ, "PATH": str(bin_dir)},
                          timeout=120)
    assert proc.stdout.split() == ["1000", "unshare", "1.0"], proc.stderr
    assert _untouched(host_dir)


def test_no_isolating_backend_runs_nothing(monkeypatch, tmp_path, host_dir):
    _hide(monkeypatch, tmp_path, ("prlimit",))
    with pytest.raises(SandboxUnavailable, match=r"no isolating sandbox works on this machine .*apt-get install "
                                                 r"bubblewrap.*unsafe-no-isolation"):
        choose_backend(SandboxConfig())
    marker = host_dir / "ran.txt"
    res = score_detailed("code", f"open({str(marker)!r}, 'w').write('x')\n" + GOOD, REF)
    assert res.score == 0.0 and res.meta["isolation"] == "none" and "not run" in res.reason
    assert not marker.exists()
    # a data row cannot turn isolation off; only the recipe (the stage's environment) can
    assert code.sandbox_config({"sandbox": {"backend": "unsafe-no-isolation"}}).backend == "auto"
    monkeypatch.setenv(sandbox.ENV_SANDBOX, '{"backend": "unsafe-no-isolation"}')
    res = score_detailed("code", GOOD, REF)
    assert res.score == 1.0 and res.meta["isolation"] == "unsafe-no-isolation"
