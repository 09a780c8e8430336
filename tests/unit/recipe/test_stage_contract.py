"""The stage contract: a stage module is a `StageModule` (KIND, Config, OUTPUTS, run), checked when the registry
loads it; a stage's Config answers every hook the pipeline asks (StageConfig declares each with its default)."""

from __future__ import annotations

import inspect
from typing import Literal

import pytest

from ringctl.errors import RecipeError
from ringctl.pipeline import planning, preconditions
from ringctl.recipe import registry
from ringctl.recipe.base import StageConfig
from ringctl.recipe.loader import load_recipe, load_resolved
from tests.helpers import PLUGINS, REPO, plugin_stage_source, write


def _plugin(tmp_path, monkeypatch, package: str, source: str) -> str:
    write(tmp_path / package / "__init__.py", "")
    write(tmp_path / package / "stage.py", source)
    monkeypatch.syspath_prepend(str(tmp_path))
    return f"{package}.stage"


def test_builtin_stage_modules_keep_the_contract():
    for kind in registry.BUILTIN_KINDS:
        module = registry.load_stage_module(kind)
        assert isinstance(module, registry.StageModule)
        assert module.KIND == kind and module.Config.model_fields["kind"].default == kind
        assert not registry.contract_problems(module)


def test_a_plugin_stage_keeps_the_contract(tmp_path, monkeypatch):
    kind = _plugin(tmp_path, monkeypatch, "contract_ok", plugin_stage_source("contract_ok.stage"))
    module = registry.load_stage_module(kind)
    assert module.OUTPUTS == ("result",) and issubclass(module.Config, StageConfig)


def test_a_stage_module_without_run_is_an_unknown_kind_naming_it(tmp_path, monkeypatch):
    source = plugin_stage_source("contract_norun.stage").split("def run(")[0]
    kind = _plugin(tmp_path, monkeypatch, "contract_norun", source)
    with pytest.raises(registry.UnknownKind, match=r"stage module 'contract_norun.stage' lacks run \(see the stage "
                                                   r"contract"):
        registry.load_stage_module(kind)


def test_a_stage_module_missing_several_names_lists_them(tmp_path, monkeypatch):
    kind = _plugin(tmp_path, monkeypatch, "contract_bare", "def run(cfg, ctx):\n    return {}\n")
    with pytest.raises(registry.UnknownKind, match="lacks KIND, Config, OUTPUTS"):
        registry.load_stage_module(kind)


def test_a_config_that_is_not_a_stage_config_is_refused(tmp_path, monkeypatch):
    source = plugin_stage_source("contract_cfg.stage").replace("class Config(StageConfig):", "class Config:")
    kind = _plugin(tmp_path, monkeypatch, "contract_cfg", source)
    with pytest.raises(registry.UnknownKind, match="Config is not a subclass of ringctl.recipe.base.StageConfig"):
        registry.load_stage_module(kind)


def test_a_broken_plugin_is_a_located_recipe_error(tmp_path, monkeypatch):
    source = plugin_stage_source("contract_recipe.stage").replace('OUTPUTS = ("result",)', 'OUTPUTS = "result"')
    _plugin(tmp_path, monkeypatch, "contract_recipe", source)
    recipe = write(tmp_path / "r.yaml", "name: r\nstages:\n  a:\n    kind: contract_recipe.stage\n")
    with pytest.raises(RecipeError) as ei:
        load_recipe(recipe)
    (problem,) = ei.value.problems
    assert (problem.line, problem.path) == (4, "stages.a.kind")
    assert "OUTPUTS is not a sequence of output names" in problem.message


class Minimal(StageConfig):
    kind: Literal["minimal"] = "minimal"


def test_stage_config_declares_every_hook_with_its_default():
    cfg = Minimal()
    assert cfg.validate_for(None, 1) == []
    assert cfg.external_files() == [] and cfg.external_file_location("x.jsonl") is None
    assert cfg.may_read_domain("code") is False
    assert cfg.declared_records("all", None) is None and cfg.declared_domains("all", None) is None
    assert cfg.is_reward_model("model") is False and cfg.chat_template_problem("model") is None
    assert cfg.trained_max_length() is None and cfg.passes_model_through() is False
    assert cfg.sequence_need() is None
    assert cfg.scored_domains() == [] and cfg.scores_code() is False
    assert cfg.preflight(None, 1) == [] and cfg.memory_workload(None, 1) is None
    # each hook is documented where it is declared
    hooks = [name for name, f in vars(StageConfig).items() if inspect.isfunction(f) and not name.startswith("_")]
    assert len(hooks) == 15 and all(getattr(StageConfig, name).__doc__ for name in hooks)


def test_declared_domains_come_from_declared_records():
    class Records(Minimal):
        def declared_records(self, output, recipe):
            return {("math", "a"), ("code", "b"), ("math", "c")}

    assert Records().declared_domains("all", None) == {"math", "code"}


def test_builtin_configs_answer_the_hooks_the_pipeline_asks():
    loaded = load_recipe(REPO / "recipes" / "ring-lite-2507.yaml")  # validation does not check inputs
    stages = loaded.recipe.stages
    assert stages["sft"].trained_max_length() == ("max_seq_len", stages["sft"].max_seq_len)
    assert stages["select"].passes_model_through() and not stages["sft"].passes_model_through()
    rl = stages["reasoning_rl"]
    assert rl.sequence_need() == ("max_prompt_tokens + max_new_tokens", rl.max_prompt_tokens + rl.max_new_tokens)
    assert stages["rm"].is_reward_model("model") and not stages["rm"].is_reward_model("report")
    assert not stages["sft"].is_reward_model("final")
    assert stages["filter"].may_read_domain("code")  # rl_code.jsonl: domain code
    assert stages["select"].scored_domains() is None and stages["sft"].scored_domains() == []
    assert stages["evaluate"].scores_code()  # humaneval
    assert preconditions.code_reward_stages(loaded.recipe) == ["select", "reasoning_rl", "general_rl", "evaluate"]
    (check,) = planning.sequence_length_checks(loaded.recipe)
    assert check["stage"] == "reasoning_rl" and check["check"] == "SFT max length covers RL prompt + response"
    assert check["detail"].startswith(f"sft.max_seq_len {stages['sft'].max_seq_len:,} vs max_prompt_tokens")


def test_plugin_stages_get_the_defaults_through_the_pipeline(monkeypatch):
    monkeypatch.syspath_prepend(str(PLUGINS))
    recipe = load_resolved("name: toy\nresources: {model_parameters_b: 0.001}\nstages:\n"
                           "  a: {kind: toy_stages.counter, steps: 2}\n"
                           "  b: {kind: toy_stages.counter, source: a.result}\n", "toy.yaml").recipe
    assert preconditions.code_reward_stages(recipe) == []
    assert planning.sequence_length_checks(recipe) == []
    assert [c["stage"] for c in planning.preflight(recipe)] == ["*"]
    assert [p for _, p, _ in preconditions.input_paths(recipe)] == []
