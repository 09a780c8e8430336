"""Recipe validation: every class of bad input gives one located error (file:line:col, field path), exit 2."""

from __future__ import annotations

import sys

import pytest

from ringctl.errors import RecipeError
from ringctl.recipe.loader import load_recipe
from tests.helpers import PLUGINS, ringctl_json, write

GOOD = """
name: toy
seed: 3
stages:
  a:
    kind: toy_stages.counter
    steps: 2
  b:
    kind: toy_stages.counter
    source: a.result
    add: ${seed}
"""


@pytest.fixture(autouse=True)
def plugins_on_path(monkeypatch):
    monkeypatch.syspath_prepend(str(PLUGINS))


def problems(path, overrides=()):
    with pytest.raises(RecipeError) as ei:
        load_recipe(path, list(overrides))
    return ei.value.problems


def test_valid_recipe_interpolates_and_orders(tmp_path):
    loaded = load_recipe(write(tmp_path / "r.yaml", GOOD))
    assert loaded.recipe.stages["b"].add == 3  # ${seed}
    assert loaded.resolved["stages"]["b"]["source"] == "a.result"
    assert list(loaded.recipe.stages) == ["a", "b"]


def test_wrong_type_is_located(tmp_path):
    p = write(tmp_path / "r.yaml", GOOD.replace("steps: 2", "steps: three"))
    (pr,) = problems(p)
    assert (pr.line, pr.column, pr.path) == (6, 12, "stages.a.steps")
    assert "valid integer" in pr.message and "'three'" in pr.message
    assert str(pr).endswith("r.yaml:6:12: stages.a.steps: Input should be a valid integer (got 'three')")


def test_unknown_key_with_suggestion(tmp_path):
    (pr,) = problems(write(tmp_path / "r.yaml", GOOD.replace("steps: 2", "stepz: 2")))
    assert (pr.line, pr.path) == (6, "stages.a.stepz")
    assert "did you mean 'steps'" in pr.message


def test_unknown_top_level_key(tmp_path):
    (pr,) = problems(write(tmp_path / "r.yaml", "trackin: {}\n" + GOOD))
    assert (pr.line, pr.column, pr.path) == (1, 1, "trackin")
    assert "did you mean 'tracking'" in pr.message


def test_unknown_builtin_kind_with_suggestion(tmp_path):
    text = GOOD.replace("kind: toy_stages.counter\n    steps: 2", "kind: data_filterr\n    steps: 2")
    prs = problems(write(tmp_path / "r.yaml", text))
    kind_problems = [p for p in prs if p.path == "stages.a.kind"]
    assert kind_problems and kind_problems[0].line == 5
    assert "unknown stage kind 'data_filterr'" in kind_problems[0].message


def test_unknown_plugin_kind(tmp_path):
    (pr,) = [p for p in problems(write(tmp_path / "r.yaml", GOOD.replace("toy_stages.counter\n    steps",
                                                                        "toy_stages.nope\n    steps")))
             if p.path == "stages.a.kind"]
    assert pr.line == 5 and "cannot import" in pr.message


def test_missing_required_field(tmp_path):
    (pr,) = problems(write(tmp_path / "r.yaml", GOOD.replace("name: toy\n", "")))
    assert pr.path == "name" and "missing" in pr.message


def test_reference_to_unknown_stage_and_output(tmp_path):
    prs = problems(write(tmp_path / "r.yaml", GOOD.replace("source: a.result", "source: aa.result")))
    assert [(p.line, p.path) for p in prs] == [(9, "stages.b.source")]
    assert "no stage named 'aa'" in prs[0].message and "did you mean 'a'" in prs[0].message
    (pr,) = problems(write(tmp_path / "r2.yaml", GOOD.replace("source: a.result", "source: a.reslt")))
    assert "has no output 'reslt'" in pr.message and "did you mean 'result'" in pr.message


def test_self_reference_and_cycle(tmp_path):
    (pr,) = problems(write(tmp_path / "r.yaml", GOOD.replace("source: a.result", "source: b.result")))
    assert "its own output" in pr.message
    cyc = GOOD.replace("    steps: 2\n", "    steps: 2\n    source: b.result\n")
    (pr,) = problems(write(tmp_path / "c.yaml", cyc))
    assert "dependency cycle" in pr.message and ("a -> b -> a" in pr.message or "b -> a -> b" in pr.message)


def test_yaml_syntax_error_and_duplicate_key(tmp_path):
    (pr,) = problems(write(tmp_path / "r.yaml", GOOD + "  c: [\n"))
    assert pr.line is not None and "YAML syntax error" in pr.message
    (pr,) = problems(write(tmp_path / "d.yaml", GOOD.replace("  b:\n", "  a:\n")))
    assert pr.line == 7 and "duplicate key 'a'" in pr.message and "line 4" in pr.message


def test_all_errors_at_once(tmp_path):
    text = GOOD.replace("seed: 3", "seed: x").replace("steps: 2", "steps: two").replace("add: ${seed}", "addd: 1")
    prs = problems(write(tmp_path / "r.yaml", text))
    assert {p.path for p in prs} >= {"seed", "stages.a.steps", "stages.b.addd"}


def test_overrides(tmp_path):
    p = write(tmp_path / "r.yaml", GOOD)
    assert load_recipe(p, ["stages.a.steps=7"]).recipe.stages["a"].steps == 7
    assert load_recipe(p, ["~stages.b.add"]).recipe.stages["b"].add == 1  # back to the default
    (pr,) = problems(p, ["stages.a.stepz=7"])
    assert (pr.file, pr.line) == ("<overrides>", 1) and "did you mean 'steps'" in pr.message
    # a `+` typo must never be silently dropped
    (pr,) = problems(p, ["stages.a.steps=4", "+stages.a.stepz=7"])
    assert (pr.file, pr.line, pr.path) == ("<overrides>", 2, "stages.a.stepz") and "unknown key" in pr.message
    (pr,) = problems(p, ["stages.a.steps=three"])
    assert pr.file == "<overrides>" and "valid integer" in pr.message


def test_defaults_list_fragment_positions(tmp_path):
    write(tmp_path / "fragments" / "tracking.yaml", """
        # @package tracking
        experiment: 5
        log_checkpoints: sometimes
    """)
    p = write(tmp_path / "r.yaml", "defaults:\n  - fragments/tracking\n  - _self_\n" + GOOD)
    prs = problems(p)
    (pr,) = [x for x in prs if x.path == "tracking.log_checkpoints"]
    assert pr.file.endswith("fragments/tracking.yaml") and pr.line == 3


def test_cli_validate_exit_codes(tmp_path):
    good = write(tmp_path / "r.yaml", GOOD)
    proc, doc = ringctl_json("validate", good, cwd=tmp_path)
    assert proc.returncode == 0 and doc == {"valid": True, "errors": []}
    bad = write(tmp_path / "bad.yaml", GOOD.replace("steps: 2", "steps: three"))
    proc, doc = ringctl_json("validate", bad, cwd=tmp_path)
    assert proc.returncode == 2 and doc["valid"] is False
    (err,) = doc["errors"]
    assert err["line"] == 6 and err["column"] == 12 and err["path"] == "stages.a.steps"
    assert err["file"].endswith("bad.yaml")


def test_validate_does_not_import_torch(tmp_path):
    import subprocess

    from tests.helpers import cli_env

    good = write(tmp_path / "r.yaml", GOOD)
    code = (f"import sys; from ringctl.cli import main; sys.argv=['ringctl','validate',{str(good)!r}]\n"
            "try:\n    main()\nexcept SystemExit:\n    pass\n"
            "heavy=[m for m in ('torch','transformers','mlflow','deepspeed') if m in sys.modules]\n"
            "print('HEAVY', heavy)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=cli_env(), cwd=tmp_path)
    assert "HEAVY []" in out.stdout, out.stdout + out.stderr
