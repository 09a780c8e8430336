"""A stage's code version is the import closure of its module (ringctl/pipeline/closure.py): every file it can
execute, read from the sources without importing them."""

from __future__ import annotations

import importlib
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from ringctl.pipeline import closure
from ringctl.recipe import registry
from tests.helpers import REPO

VERIFIERS = ["ringctl/rewards/math_answer.py", "ringctl/rewards/code.py", "ringctl/rewards/ifeval.py",
             "ringctl/rewards/games/arithmetic.py", "ringctl/rewards/games/countdown.py",
             "ringctl/rewards/games/sudoku.py", "ringctl/rewards/games/maze.py", "ringctl/rewards/games/arc.py"]


@pytest.mark.parametrize(("kind", "expected"), [
    # the difficulty step samples with a checkpoint: the generation path, rollout and train
    ("data_filter", ["stages/__init__.py", "stages/data_filter.py", "ringctl/data/filters/difficulty.py",
                     "ringctl/rollout/hf.py", "ringctl/rollout/decode.py", "ringctl/rollout/generation.py",
                     "ringctl/train/models.py", "ringctl/data/synth.py", *VERIFIERS]),
    ("reward_model", ["stages/reward_model.py", "ringctl/rewards/rm_scorer.py", "ringctl/train/runtime.py",
                      "ringctl/dist.py", "ringctl/train/engine.py"]),
    ("rl", ["stages/rl.py", "ringctl/rl/trainer.py", "ringctl/rl/loss.py", "ringctl/rl/budget.py",
            "ringctl/rl/microbatch.py", "ringctl/train/runtime.py", "ringctl/data/records.py",
            "ringctl/rollout/generation.py", "ringctl/rollout/hf.py", *VERIFIERS]),
    ("select_sft", ["stages/select_sft.py", "ringctl/selection.py", "ringctl/rl/trainer.py", "ringctl/rl/loss.py",
                    "ringctl/rollout/generation.py", *VERIFIERS]),
    ("sft", ["stages/sft.py", "ringctl/train/packing.py", "ringctl/train/checkpoint.py", "ringctl/train/engine.py",
             "ringctl/train/runtime.py"]),
    ("evaluate", ["stages/evaluate.py", "ringctl/eval/run.py", "ringctl/eval/sampling.py", "ringctl/rollout/hf.py",
                  *VERIFIERS]),
])
def test_builtin_closures_hold_the_modules_the_stage_runs(kind, expected):
    files = closure.stage_code_files(kind)
    assert not [f for f in expected if f not in files]
    # a package import runs its __init__.py; every file exists and is hashed
    assert {"ringctl/__init__.py", "stages/__init__.py"} <= set(files)
    assert all((REPO / f).is_file() and len(h) == 16 for f, h in files.items())
    # no stage runs another stage's module (select_sft's probe is the library's RL trainer)
    others = {f"stages/{k}.py" for k in registry.BUILTIN_KINDS} - {f"stages/{kind}.py"}
    assert not others & set(files)
    assert closure.stage_code_version(kind) == closure.version_of(files)


def test_computing_code_versions_imports_nothing_heavy():
    code = ("import sys\nfrom ringctl.pipeline import closure\nfrom ringctl.recipe import registry\n"
            "print(sorted(len(closure.stage_code_files(k)) for k in registry.BUILTIN_KINDS))\n"
            "heavy = [m for m in ('torch', 'transformers', 'mlflow', 'deepspeed', 'sympy') if m in sys.modules]\n"
            "assert not heavy, heavy\n")
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr


def _package(root: Path, files: dict[str, str]) -> None:
    for rel, text in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text).lstrip("\n"))


def _forget_closures() -> None:
    for f in (closure._package_dirs, closure.module_file, closure.module_dependencies, closure.import_closure,
              closure.closure_files):
        f.cache_clear()


@pytest.fixture
def plugin_root(tmp_path, monkeypatch):
    """tmp_path on sys.path, for packages written by the test (the per-process caches are emptied around it)."""
    monkeypatch.syspath_prepend(str(tmp_path))
    importlib.invalidate_caches()
    _forget_closures()
    yield tmp_path
    _forget_closures()


def test_import_forms(plugin_root):
    _package(plugin_root, {
        "plug/__init__.py": "",
        "plug/stage.py": """
            import json
            import plug.sub.deep
            from . import sibling
            from .sub import helper as h
            from plug.sub import named
            from typing import TYPE_CHECKING
            if TYPE_CHECKING:
                from plug import typing_only

            def run():
                from plug.lazy import thing  # imports inside functions run too
                from ringctl.errors import BadInput
                import numpy  # not a project package
        """,
        "plug/sibling.py": "",
        "plug/sub/__init__.py": "",
        "plug/sub/deep.py": "from ..up import x\n",
        "plug/sub/helper.py": "",
        "plug/sub/named.py": "",
        "plug/sub/unused.py": "",
        "plug/up.py": "x = 1\n",
        "plug/lazy.py": "thing = 1\n",
        "plug/typing_only.py": "",
        "plug/unrelated.py": "",
        "other_top/__init__.py": "",
        "plug/README.md": "not code",
    })
    files = closure.closure_files("plug.stage")
    assert {f for f in files if f.startswith("plug/")} == {
        "plug/__init__.py", "plug/stage.py", "plug/sibling.py", "plug/sub/__init__.py", "plug/sub/deep.py",
        "plug/sub/helper.py", "plug/sub/named.py", "plug/up.py", "plug/lazy.py"}
    assert {"ringctl/__init__.py", "ringctl/errors.py"} <= set(files)  # a plugin may run ringctl's library too
    assert not any(f.startswith("other_top/") for f in files)


def test_dynamic_imports(plugin_root):
    _package(plugin_root, {
        "dyn/__init__.py": "",
        "dyn/stage.py": "from dyn import registry, engines\nfrom dyn.util import load\n",
        "dyn/registry.py": """
            from dyn.util.load import load
            _BY_NAME = {"a": "dyn.verifiers.a", "b": "dyn.verifiers.b"}  # module names as literals: imports

            def get(name):
                return load(_BY_NAME[name])
        """,
        "dyn/verifiers/__init__.py": "",
        "dyn/verifiers/a.py": "",
        "dyn/verifiers/b.py": "",
        "dyn/verifiers/c.py": "",  # named nowhere
        "dyn/engines.py": """
            import importlib

            def engine(kind):
                return importlib.import_module(f"dyn.backends.{kind}")  # every module of dyn.backends
        """,
        "dyn/backends/__init__.py": "",
        "dyn/backends/hf.py": "",
        "dyn/backends/fast/__init__.py": "",
        "dyn/backends/fast/impl.py": "",
        "dyn/util/__init__.py": "",
        "dyn/util/load.py": """
            import importlib

            def load(name):
                return importlib.import_module(name)  # unreadable target: all of dyn.util
        """,
        "dyn/util/extra.py": "",
        "dyn/unrelated.py": "",
    })
    files = set(closure.closure_files("dyn.stage"))
    assert {"dyn/verifiers/a.py", "dyn/verifiers/b.py", "dyn/backends/hf.py", "dyn/backends/fast/impl.py",
            "dyn/util/extra.py"} <= files
    assert not {"dyn/verifiers/c.py", "dyn/unrelated.py"} & files


def test_ringctl_registries_reach_every_verifier_and_game():
    # ringctl.rewards picks verifiers by domain, ringctl.data.synth games by an f-string: both are followed
    rewards = set(closure.closure_files("ringctl.rewards"))
    assert set(VERIFIERS) <= rewards
    synth = set(closure.closure_files("ringctl.data.synth"))
    assert {f for f in VERIFIERS if "/games/" in f} <= synth
    # the stage registry names every stage module; its dynamic import is the closure's root, not followed
    assert not any(f.startswith("stages/") for f in closure.closure_files("ringctl.recipe.registry"))
