"""A user's clone has nothing beside it, and an installed wheel has no checkout at all: the committed tree alone
validates and plans every recipe and finds every benchmark preset, and a wheel built from it carries the
benchmark files that `ringctl eval` reads. The clone holds committed files only (commit before running these)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from tests.conftest import REPO

SHIPPED = Path("ringctl") / "data" / "benchmarks"


def _git(*args: str, cwd: Path = REPO) -> subprocess.CompletedProcess:
    if shutil.which("git") is None:
        pytest.skip("git is not installed")
    proc = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True)
    if proc.returncode != 0 and "not a git repository" in proc.stderr:
        pytest.skip(f"{REPO} is not a git checkout")
    return proc


def _bare_env(**extra: str) -> dict:
    """This interpreter's environment without anything that points at the checkout or at benchmark files."""
    env = {k: v for k, v in os.environ.items() if k not in ("RINGCTL_BENCHMARKS_DIR", "PYTHONPATH",
                                                              "MLFLOW_TRACKING_URI")}
    env["HF_HUB_OFFLINE"] = "1"
    env.update(extra)
    return env


def _run(*args, cwd: Path, env: dict, timeout: float = 600) -> subprocess.CompletedProcess:
    proc = subprocess.run([str(a) for a in args], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, f"{' '.join(map(str, args))} exited {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
    return proc


def test_no_tracked_file_refers_to_the_folder_beside_the_checkout():
    """Nothing but documentation may name the directory beside the checkout: a clone has nothing there."""
    pattern = r"\.\./shared"  # written so that this file does not match it
    joined = r"""["']shared["'][[:space:]]*[/,]"""  # the same path built from parts (a / operator, a join)
    for regex in (pattern, joined):
        proc = _git("grep", "-n", "-I", "-E", "-e", regex, "--", ".", ":!*.md")
        assert proc.returncode == 1 and not proc.stdout, f"tracked files refer to it ({regex}):\n{proc.stdout}"


@pytest.fixture(scope="module")
def clone(tmp_path_factory) -> Path:
    dest = tmp_path_factory.mktemp("bare") / "clone"
    proc = _git("clone", "-q", str(REPO), str(dest))
    assert proc.returncode == 0, proc.stderr
    return dest


@pytest.mark.slow
def test_bare_clone_validates_plans_and_finds_every_preset(clone, tmp_path):
    env = _bare_env()
    # `python -m` and `-c` put the working directory first on sys.path: the clone's code, not the checkout's
    probe = _run(sys.executable, "-c", "import json, ringctl, stages; from ringctl.data import benchmark_files as b; "
                 "print(json.dumps([ringctl.__file__, stages.__file__, str(b.default_benchmarks_dir())]))",
                 cwd=clone, env=env)
    package, stage_package, default_dir = map(Path, json.loads(probe.stdout))
    assert package.is_relative_to(clone) and stage_package.is_relative_to(clone), probe.stdout
    assert default_dir == clone / SHIPPED
    recipes = sorted((clone / "recipes").glob("*.yaml"))
    assert {r.name for r in recipes} >= {"tiny.yaml", "filter-demo.yaml", "ring-lite-2507.yaml"}
    for recipe in recipes:
        extra = ["--skip-input-check"] if "ring-lite" in recipe.name else []
        _run(sys.executable, "-m", "ringctl", "validate", recipe, *extra, cwd=clone, env=env)
        _run(sys.executable, "-m", "ringctl", "plan", recipe, *extra, "--workdir", tmp_path / "runs", cwd=clone,
             env=env)
    # every preset of the evaluation and of decontamination resolves to the clone's shipped copy and reads
    check = """
import json
from ringctl.data.filters import Decontaminate
from ringctl.eval.benchmarks import PRESETS, BenchmarkSpec, load_benchmark
out = {}
for name in PRESETS:
    bench = load_benchmark(BenchmarkSpec(name=name, limit=1))
    out[name] = [bench.source, len(bench.problems)]
Decontaminate(benchmarks=list(PRESETS)).build()
print(json.dumps(out))
"""
    found = json.loads(_run(sys.executable, "-c", check, cwd=clone, env=env).stdout)
    assert set(found) == {"math500", "aime24", "aime25", "amc23", "gsm8k", "humaneval", "ifeval"}
    for source, count in found.values():
        assert Path(source).parent == clone / SHIPPED and count == 1


@pytest.mark.slow
def test_wheel_carries_the_benchmarks_ringctl_eval_reads(clone, tmp_path):
    pytest.importorskip("setuptools", reason="builds the wheel with this environment's setuptools (no download)")
    env = _bare_env(PIP_NO_INDEX="1", PIP_DISABLE_PIP_VERSION_CHECK="1")
    dist = tmp_path / "dist"
    _run(sys.executable, "-m", "pip", "wheel", ".", "--no-deps", "--no-build-isolation", "-q", "-w", dist,
         cwd=clone, env=env)
    (wheel,) = dist.glob("ringctl-*.whl")
    shipped = sorted(p.name for p in (clone / SHIPPED).iterdir())
    with zipfile.ZipFile(wheel) as zf:
        assert sorted(Path(n).name for n in zf.namelist() if Path(n).parent == SHIPPED) == shipped
    # installed apart from the checkout (the dependencies are this environment's), run from elsewhere
    target, elsewhere = tmp_path / "site", tmp_path / "elsewhere"
    elsewhere.mkdir()
    _run(sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", target, wheel, cwd=elsewhere, env=env)
    env = _bare_env(PYTHONPATH=str(target))
    probe = _run(sys.executable, "-c", "import json, ringctl; from ringctl.data import benchmark_files as b; "
                 "from ringctl.train.config import ModelConfig; from ringctl.train.models import save_tiny; "
                 "save_tiny(ModelConfig(), 'ckpt'); print(json.dumps([ringctl.__file__, "
                 "str(b.default_benchmarks_dir())]))", cwd=elsewhere, env=env)
    package, default_dir = map(Path, json.loads(probe.stdout.splitlines()[-1]))  # after DeepSpeed's notice
    assert package.is_relative_to(target) and default_dir == target / SHIPPED, probe.stdout
    proc = _run(sys.executable, "-m", "ringctl", "eval", "ckpt", "--benchmarks", "math500,aime25,ifeval", "--limit",
                "1", "--n", "1", "--max-new-tokens", "8", "--workdir", "runs", "--out", "out", "--json",
                cwd=elsewhere, env=env)
    rows = {r["benchmark"]: r for r in json.loads(proc.stdout)["results"]}
    assert set(rows) == {"math500", "aime25", "ifeval"} and all(r["num_problems"] == 1 for r in rows.values())
    assert set(rows["ifeval"]["ifeval"]) == {"prompt_level_strict", "inst_level_strict", "prompt_level_loose",
                                             "inst_level_loose"}
    samples = [json.loads(line) for line in open(elsewhere / "out" / "samples.jsonl", encoding="utf-8")]
    assert {s["problem_id"] for s in samples} == {"math500/test/precalculus/807.json", "aime25/0", "ifeval/1000"}
