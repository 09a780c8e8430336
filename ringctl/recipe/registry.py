"""Stage kinds -> stage modules: the only module of `ringctl/` that names `stages/`.

A stage module is a `StageModule`: ``KIND``, ``Config`` (a `ringctl.recipe.base.StageConfig` subclass with
``kind: Literal[KIND]``; what the pipeline asks a stage before it runs, it asks through the Config's hooks),
``OUTPUTS`` (output names other stages may reference) and ``run(cfg, ctx) -> dict[str, Artifact]``.
`load_stage_module` checks that contract on import and raises `UnknownKind` naming what is missing.
Users plug their own stage with ``kind: my_package.my_module``. Stage modules import torch & co inside
``run`` only, so that validating a recipe stays fast. The stage's code version is computed from the files it can
execute (its import closure, see ringctl/pipeline/closure.py).
"""

from __future__ import annotations

import importlib
import importlib.util
from collections.abc import Callable, Sequence
from functools import cache
from types import ModuleType
from typing import Any, Protocol, runtime_checkable

from ringctl.recipe.base import StageConfig

BUILTIN_KINDS: dict[str, str] = {
    "data_filter": "stages.data_filter",
    "sft": "stages.sft",
    "select_sft": "stages.select_sft",
    "rl": "stages.rl",
    "evaluate": "stages.evaluate",
    "reward_model": "stages.reward_model",
}


@runtime_checkable
class StageModule(Protocol):
    """What a stage module provides (module attributes)."""

    KIND: str
    Config: type[StageConfig]
    OUTPUTS: Sequence[str]
    run: Callable[[Any, Any], dict]


class UnknownKind(LookupError):
    pass


def available_builtin_kinds() -> list[str]:
    return [k for k, mod in BUILTIN_KINDS.items() if importlib.util.find_spec(mod) is not None]


def is_plugin_kind(kind: str) -> bool:
    return "." in kind


def stage_module_name(kind: str) -> str:
    name = BUILTIN_KINDS.get(kind) or (kind if is_plugin_kind(kind) else None)
    if name is None:
        raise UnknownKind(f"unknown stage kind {kind!r}")
    return name


def contract_problems(module: ModuleType) -> list[str]:
    """How `module` breaks the StageModule contract (empty: it keeps it)."""
    missing = [a for a in StageModule.__annotations__ if not hasattr(module, a)]
    if missing:
        return [f"lacks {', '.join(missing)}"]
    problems = []
    if not (isinstance(module.Config, type) and issubclass(module.Config, StageConfig)):
        problems.append("Config is not a subclass of ringctl.recipe.base.StageConfig")
    if isinstance(module.OUTPUTS, str) or not all(isinstance(o, str) for o in module.OUTPUTS):
        problems.append("OUTPUTS is not a sequence of output names")
    if not callable(module.run):
        problems.append("run is not callable")
    return problems


@cache
def load_stage_module(kind: str) -> StageModule:
    """Import the module for a kind and check it keeps the stage contract; raise UnknownKind with a readable
    reason."""
    module_name = stage_module_name(kind)
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as e:
        raise UnknownKind(f"stage kind {kind!r}: cannot import module {module_name!r} ({e})") from e
    problems = contract_problems(module)
    if problems:
        raise UnknownKind(f"stage module {module_name!r} {'; '.join(problems)} (see the stage contract, "
                          f"ringctl.recipe.registry.StageModule)")
    return module  # type: ignore[return-value]
