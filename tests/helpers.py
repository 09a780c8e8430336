"""Helpers shared by the tests: run the CLI in a subprocess, write recipes, read MLflow back."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PLUGINS = REPO / "tests" / "plugins"


def cli_env(extra: dict | None = None) -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(PLUGINS), str(REPO), env.get("PYTHONPATH", "")])
    env["HF_HUB_OFFLINE"] = "1"
    env.pop("MLFLOW_TRACKING_URI", None)
    for name in ("COLUMNS", "LINES"):  # output as on a pipe, whatever terminal the tests run in (`extra` may set them)
        env.pop(name, None)
    env.update(extra or {})
    return env


def ringctl(*args: str, cwd: Path, env: dict | None = None, timeout: float = 600, check: bool = False):
    """Run `python -m ringctl ARGS` in `cwd`; returns CompletedProcess (text)."""
    proc = subprocess.run([sys.executable, "-m", "ringctl", *map(str, args)], cwd=cwd, env=cli_env(env),
                          capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"ringctl {' '.join(map(str, args))} exited {proc.returncode}\n"
                             f"stdout:\n{proc.stdout}\nstderr:\n{proc.stderr}")
    return proc


def ringctl_json(*args: str, cwd: Path, **kw):
    proc = ringctl(*args, "--json", cwd=cwd, **kw)
    try:
        return proc, json.loads(proc.stdout)
    except json.JSONDecodeError as e:
        raise AssertionError(f"not one JSON document on stdout:\n{proc.stdout}\nstderr:\n{proc.stderr}") from e


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text).lstrip("\n"))
    return path
