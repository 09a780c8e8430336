"""Helpers shared by the tests: run the CLI in a subprocess, write recipes, read MLflow back."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ringctl.pipeline.launchers import free_port  # noqa: F401  (re-exported for the tests)

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


def wait_for(condition: Callable[[], Any], what: str, timeout: float = 120.0,
             proc: subprocess.Popen | None = None, interval: float = 0.1) -> Any:
    """Poll `condition()` until it returns something truthy, and return that. Fails, naming `what` (the state
    waited for), when `timeout` seconds pass first, or when `proc` exits before the condition holds (with its exit
    code, and the end of its stderr when that is a pipe): a wait never lets a test go on without its state."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if proc is not None and proc.poll() is not None:
            value = condition()  # it may have reached the state just before exiting
            if value:
                return value
            raise AssertionError(f"waiting for {what}: the process exited ({proc.returncode}) first"
                                 + _stderr_tail(proc))
        if time.monotonic() > deadline:
            raise AssertionError(f"waiting for {what}: not within {timeout:g} s")
        time.sleep(interval)


def run_then_sigkill(recipe: Path, workdir: Path, state_glob: str, what: str, timeout: float = 900) -> Path:
    """`ringctl run recipe` in its own process group, SIGKILLed (the whole group: stage processes included) once
    `workdir/<run>/<state_glob>` exists; returns the run directory."""
    p = subprocess.Popen([sys.executable, "-m", "ringctl", "run", str(recipe), "--workdir", str(workdir)],
                         cwd=workdir.parent, env=cli_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                         start_new_session=True)
    wait_for(lambda: list(workdir.glob(f"*/{state_glob}")), what, timeout, p)
    os.killpg(p.pid, signal.SIGKILL)
    p.wait()
    (run_dir,) = [d for d in workdir.iterdir() if d.is_dir() and not d.name.startswith(".")]
    return run_dir


def _stderr_tail(proc: subprocess.Popen, chars: int = 3000) -> str:
    if proc.stderr is None:
        return ""
    try:
        err = proc.stderr.read()
    except (OSError, ValueError):
        return ""
    err = err.decode("utf-8", "replace") if isinstance(err, bytes) else err
    return f"; its stderr ends:\n{err[-chars:]}" if err else ""


def answers_health(url: str) -> bool:
    try:
        return urllib.request.urlopen(f"{url}/health", timeout=2).status == 200
    except OSError:
        return False


class MlflowServer:
    """`mlflow server` on 127.0.0.1 with a sqlite store under `root`; it can be killed and started again on the
    same port and store (a tracking outage)."""

    def __init__(self, root: Path):
        self.root = root
        root.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen | None = None

    def start(self) -> MlflowServer:
        mlflow_bin = Path(sys.executable).parent / "mlflow"
        cmd = [str(mlflow_bin) if mlflow_bin.exists() else shutil.which("mlflow"), "server",
               "--backend-store-uri", f"sqlite:///{self.root / 'mlflow.db'}",
               "--artifacts-destination", str(self.root / "art"),
               "--host", "127.0.0.1", "--port", str(self.port), "--workers", "1"]
        self.proc = subprocess.Popen(cmd, cwd=self.root, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                     start_new_session=True)
        try:
            wait_for(lambda: answers_health(self.url), f"mlflow server {self.url} to answer /health", 120,
                     self.proc, interval=0.5)
        except AssertionError:
            self.kill()
            raise
        return self

    def kill(self) -> None:
        """SIGKILL the server's whole process group (its workers too)."""
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()


def untrained_loss(tiny: Any) -> tuple[float, float]:
    """The cross-entropy of the untrained tiny model (`model.tiny` settings) and a tolerance, from its shape alone.

    At a random init the predictions are nearly uniform: with tied embeddings drawn from N(0, r^2) (r: the config's
    initializer_range) and a final RMSNorm of unit gain (|h| = sqrt(hidden)), each logit h.e_j spreads around 0
    with sigma = r * sqrt(hidden), so the loss is ln(vocab) + sigma^2 / 2 on average. A batch's mean stays well
    within sigma / 2 of that (over seeds 0-3 on the SFT data: within sigma / 7)."""
    import math

    from ringctl.train.models import build_char_tokenizer, tiny_model_config

    config = tiny_model_config(tiny, len(build_char_tokenizer()))
    sigma = config.initializer_range * math.sqrt(config.hidden_size)
    return math.log(config.vocab_size) + sigma**2 / 2, sigma / 2



def plugin_stage_source(kind: str, run_body: str = "return {}") -> str:
    """The source of a minimal plugin stage module of `kind` (KIND, Config, OUTPUTS, run) whose run() is
    `run_body` (indented by the caller's newlines with 4 spaces)."""
    return f'''
from typing import Literal

from ringctl.recipe.base import StageConfig

KIND = "{kind}"
OUTPUTS = ("result",)


class Config(StageConfig):
    kind: Literal["{kind}"] = "{kind}"


def run(cfg, ctx):
    {run_body}
'''
