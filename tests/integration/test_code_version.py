"""The cache never serves outputs of code that changed: a plugin stage (a package in tmp_path) runs, then files are
edited and `ringctl plan` says which stages rerun and names the changed file; edits outside a stage's import
closure keep it cached."""

from __future__ import annotations

import os
import textwrap
from pathlib import Path

from tests.helpers import REPO, plugin_stage_source, ringctl, ringctl_json, write

RECIPE = """
name: codever
seed: 1
resources: {model_parameters_b: 0.001}  # the memory pre-flight without building a model
stages:
  main:
    kind: codeplug.stage
  other:
    kind: codeplug.other_stage
"""

RUN = """from ringctl.pipeline.context import Artifact
    {body}
    out = ctx.outputs_dir / "result.txt"
    out.write_text(str(value))
    return {{"result": Artifact(out)}}"""


def _stage(name: str, body: str) -> str:
    return plugin_stage_source(f"codeplug.{name}", RUN.format(body=body))


FILES = {
    "codeplug/__init__.py": "",
    "codeplug/README.md": "A plugin package for the code-version test.\n",
    "codeplug/stage.py": _stage("stage", "from codeplug.helper import compute\n    value = compute()"),
    "codeplug/other_stage.py": _stage("other_stage", "value = 7"),
    "codeplug/helper.py": "from codeplug.deep import VALUE\n\n\ndef compute():\n    return VALUE + 1\n",
    "codeplug/deep.py": "VALUE = 1\n",  # reached only indirectly: stage -> helper -> deep
    "codeplug/unrelated.py": "NOTHING = 0\n",
}


def _edit(root: Path, rel: str, text: str = "\n# edited\n") -> None:
    path = root / rel
    path.write_text(path.read_text() + text)


def _plan(tmp_path: Path, recipe: Path, env: dict) -> dict[str, dict]:
    proc, doc = ringctl_json("plan", recipe, cwd=tmp_path, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return {s["name"]: s for s in doc["stages"]}


def test_plan_names_the_changed_file_and_ignores_files_outside_the_closure(tmp_path):
    for rel, text in FILES.items():
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text(textwrap.dedent(text).lstrip("\n"))
    recipe = write(tmp_path / "codever.yaml", RECIPE)
    env = {"PYTHONPATH": os.pathsep.join([str(tmp_path), str(REPO)])}
    proc, doc = ringctl_json("run", recipe, cwd=tmp_path, env=env)
    assert proc.returncode == 0 and [s["status"] for s in doc["stages"]] == ["completed"] * 2, proc.stderr[-3000:]

    # a README, a module no stage imports: both stages stay cached
    _edit(tmp_path, "codeplug/README.md", "More words.\n")
    _edit(tmp_path, "codeplug/unrelated.py")
    plan = _plan(tmp_path, recipe, env)
    assert not plan["main"]["would_run"] and not plan["other"]["would_run"], plan

    # another stage's module: that stage reruns, naming its file; `main` stays cached
    _edit(tmp_path, "codeplug/other_stage.py")
    plan = _plan(tmp_path, recipe, env)
    assert not plan["main"]["would_run"] and plan["main"]["code_changes"] == []
    assert plan["other"]["would_run"] and plan["other"]["reason"] == "stage code changed: codeplug/other_stage.py"
    assert plan["other"]["code_changes"] == [{"path": "codeplug/other_stage.py", "change": "modified"}]

    # a module the stage reaches only through another one: `main` reruns and plan names that file
    _edit(tmp_path, "codeplug/deep.py", "VALUE = 2\n")
    plan = _plan(tmp_path, recipe, env)
    assert plan["main"]["would_run"] and plan["main"]["reason"] == "stage code changed: codeplug/deep.py"
    assert plan["main"]["code_changes"] == [{"path": "codeplug/deep.py", "change": "modified"}]
    text = ringctl("plan", recipe, cwd=tmp_path, env=env)
    assert text.returncode == 0, text.stderr[-3000:]
    assert "main: codeplug/deep.py (modified)" in text.stdout and \
        "other: codeplug/other_stage.py (modified)" in text.stdout, text.stdout

    # a new module imported by the stage is named as added; running again brings both stages back to cached
    _edit(tmp_path, "codeplug/helper.py", "from codeplug import extra  # noqa: F401\n")
    (tmp_path / "codeplug" / "extra.py").write_text("")
    plan = _plan(tmp_path, recipe, env)
    assert plan["main"]["code_changes"] == [{"path": "codeplug/deep.py", "change": "modified"},
                                            {"path": "codeplug/extra.py", "change": "added"},
                                            {"path": "codeplug/helper.py", "change": "modified"}]
    proc, doc = ringctl_json("run", recipe, cwd=tmp_path, env=env)
    assert proc.returncode == 0 and [s["status"] for s in doc["stages"]] == ["completed"] * 2, proc.stderr[-3000:]
    assert Path(doc["stages"][0]["outputs"]["result"]).read_text() == "3"  # the edited deep.py ran
    plan = _plan(tmp_path, recipe, env)
    assert not plan["main"]["would_run"] and not plan["other"]["would_run"]
