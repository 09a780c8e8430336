"""validate / plan / run check the machine before anything runs: local input paths, and an isolating sandbox
wherever a stage runs code rewards (one clear error, exit 2, nothing created)."""

from __future__ import annotations

import os
import shutil
import subprocess

import pytest

from tests.helpers import ringctl, ringctl_json, write

RECIPE = """
name: coderl
{extra}
stages:
  filter:
    kind: data_filter
    sources:
      - {{path: data.jsonl, domain: {domain}}}
  sft:
    kind: sft
    data: filter.sft
  rl:
    kind: rl
    init: sft.final
    prompts: filter.rl_reasoning
{rl_extra}
"""


def _recipe(tmp_path, domain="code", extra="", rl_extra=""):
    (tmp_path / "data.jsonl").write_text('{"prompt": "p", "answer": "a"}\n')
    return write(tmp_path / "r.yaml", RECIPE.format(domain=domain, extra=extra, rl_extra=rl_extra))


def _path_with(tmp_path, *tools) -> str:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    for tool in tools:
        if not (bin_dir / tool).exists():
            os.symlink(shutil.which(tool), bin_dir / tool)
    return str(bin_dir)


def test_no_isolating_sandbox_is_one_clear_error_before_anything_runs(tmp_path):
    r = _recipe(tmp_path)
    env = {"PATH": _path_with(tmp_path, "prlimit")}  # neither bwrap nor unshare
    proc, doc = ringctl_json("validate", r, cwd=tmp_path, env=env)
    assert proc.returncode == 2 and len(doc["errors"]) == 1
    err = doc["errors"][0]
    assert err["file"] == "r.yaml" and err["line"] == 12 and err["path"] == "stages.rl"
    assert "stage rl may run model-written code" in err["message"]
    assert "apt-get install bubblewrap" in err["message"] and "unsafe-no-isolation" in err["message"]
    for cmd in ("plan", "run"):
        proc = ringctl(cmd, r, "--workdir", tmp_path / "runs", cwd=tmp_path, env=env)
        assert proc.returncode == 2 and "install bubblewrap" in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp_path / "runs").exists() and not (tmp_path / "mlflow.db").exists()
    # the recipe may opt out explicitly: plan says so
    r = _recipe(tmp_path, extra="sandbox: {backend: unsafe-no-isolation}")
    proc, doc = ringctl_json("plan", r, "--workdir", tmp_path / "runs", cwd=tmp_path, env=env)
    assert proc.returncode == 0, proc.stderr
    assert doc["sandbox"]["backend"] == "unsafe-no-isolation" and "no isolation" in doc["sandbox"]["detail"]
    # a bad backend name is a schema error
    r = _recipe(tmp_path, extra="sandbox: {backend: none}")
    proc, doc = ringctl_json("validate", r, cwd=tmp_path)
    assert proc.returncode == 2 and doc["errors"][0]["path"] == "sandbox.backend"


def test_plan_shows_the_backend_that_will_run(tmp_path):
    if subprocess.run(["unshare", "--user", "--map-root-user", "--mount", "true"], capture_output=True).returncode:
        pytest.skip("user namespaces are not allowed here")
    r = _recipe(tmp_path)
    env = {"PATH": _path_with(tmp_path, "unshare", "prlimit")}  # bubblewrap hidden
    proc, doc = ringctl_json("plan", r, "--workdir", tmp_path / "runs", cwd=tmp_path, env=env)
    assert proc.returncode == 0, proc.stderr
    assert doc["sandbox"] == {"stages": ["rl"], "configured": "auto", "backend": "unshare", "ok": True, "detail": ""}
    text = ringctl("plan", r, "--workdir", tmp_path / "runs", cwd=tmp_path, env=env).stdout
    assert "code sandbox unshare (sandbox.backend auto; code rewards in rl)" in " ".join(text.split())


def test_no_code_no_sandbox_check(tmp_path):
    env = {"PATH": _path_with(tmp_path, "prlimit")}
    for r in (_recipe(tmp_path, domain="math"), _recipe(tmp_path, rl_extra="    domains: [math]")):
        proc, doc = ringctl_json("plan", r, "--workdir", tmp_path / "runs", cwd=tmp_path, env=env)
        assert proc.returncode == 0 and doc["sandbox"] is None, proc.stdout + proc.stderr


def test_missing_paths_all_listed_with_lines(tmp_path):
    r = _recipe(tmp_path, domain="math", extra="model: {name_or_path: ./models/mine}\n"
                                               "resources: {hostfile: /nonexistent/hostfile}")
    (tmp_path / "data.jsonl").unlink()
    proc, doc = ringctl_json("validate", r, cwd=tmp_path)
    assert proc.returncode == 2
    got = {(e["path"], e["line"]) for e in doc["errors"]}
    assert got == {("model.name_or_path", 2), ("resources.hostfile", 3), ("stages.filter.sources[0].path", 8)}
    assert "model directory ./models/mine does not exist" in proc.stdout
    assert "--skip-input-check" in doc["errors"][-1]["message"]
    proc, doc = ringctl_json("plan", r, "--skip-input-check", "--workdir", tmp_path / "runs", cwd=tmp_path)
    assert proc.returncode == 0 and not doc["inputs"]["checked"] and "not checked" in doc["inputs"]["detail"]
    assert set(doc["inputs"]["paths"]) == {"./models/mine", "/nonexistent/hostfile", "data.jsonl"}
    # a hub id and the built-in tiny model are not paths
    (tmp_path / "data.jsonl").write_text("{}\n")
    r = _recipe(tmp_path, domain="math", extra="model: {name_or_path: tiny}")
    assert ringctl("validate", r, cwd=tmp_path).returncode == 0
    r = _recipe(tmp_path, domain="math", extra="model: {name_or_path: inclusionAI/Ring-lite}")
    assert ringctl("validate", r, cwd=tmp_path, env={"HF_HUB_OFFLINE": "0"}).returncode == 0
    cache = tmp_path / "hub"
    proc = ringctl("validate", r, cwd=tmp_path, env={"HF_HUB_OFFLINE": "1", "HF_HUB_CACHE": str(cache)})
    assert proc.returncode == 2 and "hub model inclusionAI/Ring-lite (HF_HUB_OFFLINE is set" in proc.stderr
    (cache / "models--inclusionAI--Ring-lite").mkdir(parents=True)
    proc = ringctl("validate", r, cwd=tmp_path, env={"HF_HUB_OFFLINE": "1", "HF_HUB_CACHE": str(cache)})
    assert proc.returncode == 0, proc.stderr
    (tmp_path / "models" / "mine").mkdir(parents=True)
    r = _recipe(tmp_path, domain="math", extra="model: {name_or_path: ./models/mine}")
    assert ringctl("validate", r, cwd=tmp_path).returncode == 0


def test_a_code_reward_stage_checks_the_sandbox_where_it_starts(tmp_path, monkeypatch):
    """On another node (or after the machine changed) the stage itself fails with the fix, on every rank."""
    from ringctl.errors import BadInput
    from ringctl.pipeline import stage_main
    from ringctl.recipe.loader import load_recipe
    from ringctl.rewards import sandbox

    r = _recipe(tmp_path)
    monkeypatch.chdir(tmp_path)
    run_dir = tmp_path / "runs" / "run-1"
    run_dir.mkdir(parents=True)
    (run_dir / "recipe.resolved.yaml").write_text(load_recipe(r).to_yaml())
    monkeypatch.setenv("PATH", _path_with(tmp_path, "prlimit"))
    monkeypatch.setattr(sandbox, "_PROBES", {})
    monkeypatch.setenv(sandbox.ENV_SANDBOX, "{}")  # main() sets it; restored after the test
    with pytest.raises(BadInput, match=r"stage 'rl' runs code rewards: no isolating sandbox .*install bubblewrap"):
        stage_main.main([str(run_dir), "rl"])
