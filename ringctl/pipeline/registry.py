"""Stage kinds -> stage modules. The only place in `ringctl/` that knows about `stages/`.

A stage module exposes ``KIND``, ``Config`` (a StageConfig subclass with ``kind: Literal[KIND]``),
``OUTPUTS`` (output names other stages may reference) and ``run(cfg, ctx) -> dict[str, Artifact]``.
Optional: ``CODE_DEPS`` (extra packages/modules whose source is part of the stage's code version).
Users plug their own stage with ``kind: my_package.my_module``. Stage modules import torch & co inside
``run`` only, so that validating a recipe stays fast.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
from functools import cache
from pathlib import Path
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


@cache
def load_stage_module(kind: str) -> ModuleType:
    """Import the module for a kind; raise UnknownKind with a readable reason."""
    module_name = BUILTIN_KINDS.get(kind) or (kind if is_plugin_kind(kind) else None)
    if module_name is None:
        raise UnknownKind(f"unknown stage kind {kind!r}")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as e:
        raise UnknownKind(f"stage kind {kind!r}: cannot import module {module_name!r} ({e})") from e
    missing = [a for a in ("Config", "OUTPUTS", "run") if not hasattr(module, a)]
    if missing:
        raise UnknownKind(f"stage module {module_name!r} lacks {', '.join(missing)} (see the stage contract)")
    return module


def _source_files(module_name: str) -> list[Path]:
    """Source files of a module or package, located without importing it (no torch import at plan time)."""
    spec = importlib.util.find_spec(module_name)
    if spec is None or spec.origin is None:
        return []
    path = Path(spec.origin)
    return sorted(path.parent.rglob("*.py")) if path.name == "__init__.py" else [path]


@cache
def code_version(kind: str) -> str:
    """Hash of the stage module's source plus its CODE_DEPS: a change here makes the stage rerun."""
    module = load_stage_module(kind)
    h = hashlib.sha256()
    for name in [module.__name__, *getattr(module, "CODE_DEPS", ())]:
        for f in _source_files(name):
            h.update(str(f.name).encode())
            h.update(f.read_bytes())
    return h.hexdigest()[:16]
