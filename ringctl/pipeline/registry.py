"""Stage kinds -> stage modules. The only place in `ringctl/` that knows about `stages/`.

A stage module exposes ``KIND``, ``Config`` (a StageConfig subclass with ``kind: Literal[KIND]``),
``OUTPUTS`` (output names other stages may reference) and ``run(cfg, ctx) -> dict[str, Artifact]``.
The stage's code version is computed from the files it can execute (its import closure, see closure.py).
Users plug their own stage with ``kind: my_package.my_module``. Stage modules import torch & co inside
``run`` only, so that validating a recipe stays fast.
"""

from __future__ import annotations

import importlib
import importlib.util
from functools import cache
from types import ModuleType

BUILTIN_KINDS: dict[str, str] = {
    "data_filter": "stages.data_filter",
    "sft": "stages.sft",
    "select_sft": "stages.select_sft",
    "rl": "stages.rl",
    "evaluate": "stages.evaluate",
    "reward_model": "stages.reward_model",
}


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


@cache
def load_stage_module(kind: str) -> ModuleType:
    """Import the module for a kind; raise UnknownKind with a readable reason."""
    module_name = stage_module_name(kind)
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as e:
        raise UnknownKind(f"stage kind {kind!r}: cannot import module {module_name!r} ({e})") from e
    missing = [a for a in ("Config", "OUTPUTS", "run") if not hasattr(module, a)]
    if missing:
        raise UnknownKind(f"stage module {module_name!r} lacks {', '.join(missing)} (see the stage contract)")
    return module


def code_files(kind: str) -> dict[str, str]:
    """{path relative to its package's folder: sha256 prefix} of every project file the stage can execute: the
    import closure of its module within `ringctl` and the module's own package (see ringctl.pipeline.closure;
    computed from the sources, without importing them, once per process)."""
    from ringctl.pipeline.closure import closure_files

    return dict(closure_files(stage_module_name(kind)))


def code_version(kind: str) -> str:
    """One hash of `code_files(kind)`: any change to a file the stage can execute makes the stage rerun."""
    from ringctl.pipeline.closure import version_of

    return version_of(code_files(kind))
