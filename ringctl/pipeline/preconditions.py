"""What a recipe needs from this machine, checked by validate, plan and run before anything runs:

- every local path it names exists and is readable: data sources and benchmark files (each stage's
  `external_files()`), model directories (any `name_or_path` that looks like a path), the DeepSpeed hostfile,
  and with HF_HUB_OFFLINE set, a hub model's directory in the local Hugging Face cache;
  `--skip-input-check` skips this for paths that exist only on the cluster;
- an isolating code sandbox works wherever a stage may run model-written code (code rewards).

Problems are located at the recipe line that names the path, all of them at once (exit 2).
"""

from __future__ import annotations

import os
from collections.abc import Collection
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from ringctl.errors import Problem, RecipeError

CODE_DOMAIN = "code"


# ------------------------------------------------------------------------------------------------------------
# code rewards
# ------------------------------------------------------------------------------------------------------------
def data_may_hold_code(recipe) -> bool:
    """Can any record of this recipe have domain `code`? (Asked of the stages that read data from outside the run:
    `StageConfig.may_read_domain`.)"""
    return any(cfg.may_read_domain(CODE_DOMAIN) for cfg in recipe.stages.values())


def code_reward_stages(recipe) -> list[str]:
    """Stages that may run model-written code through the code verifier: stages that score records of a recipe
    whose data may hold code (`scored_domains()`), and stages that read code benchmarks of their own
    (`scores_code()`)."""
    data_code = data_may_hold_code(recipe)
    out = []
    for name, cfg in recipe.stages.items():
        if cfg.scores_code():  # evaluate on humaneval
            out.append(name)
            continue
        if not data_code:
            continue
        domains = cfg.scored_domains()
        if domains is None or CODE_DOMAIN in domains:
            out.append(name)
    return out


def sandbox_summary(recipe, only: Collection[str] | None = None) -> dict | None:
    """{stages, configured, backend, ok, detail} when a stage (of `only`, if given) runs code rewards, else None.
    Probes the backend."""
    from ringctl.rewards.sandbox import SandboxUnavailable, choose_backend

    stages = [name for name in code_reward_stages(recipe) if only is None or name in only]
    if not stages:
        return None
    config = recipe.sandbox
    try:
        backend, detail, ok = choose_backend(config), "", True
    except SandboxUnavailable as e:
        backend, detail, ok = None, str(e), False
    if backend == "unsafe-no-isolation":
        detail = "no isolation: model-written code runs with your user's access to the whole file system " \
                 "(the recipe chose sandbox.backend unsafe-no-isolation)"
    return {"stages": stages, "configured": config.backend, "backend": backend, "ok": ok, "detail": detail}


# ------------------------------------------------------------------------------------------------------------
# local input paths
# ------------------------------------------------------------------------------------------------------------
def looks_local(name_or_path: str) -> bool:
    """A model reference that must be a directory here: an explicit path, or one that exists. Anything else
    (`tiny`, `org/name`) is a hub id or a built-in name and is not checked."""
    return name_or_path.startswith(("/", "./", "../", "~")) or name_or_path in (".", "..")


def hub_offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")


def hub_cache_dir() -> Path:
    """Where huggingface_hub keeps downloaded models (its own lookup order, without importing it)."""
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"])
    if os.environ.get("HF_HOME"):
        return Path(os.environ["HF_HOME"]) / "hub"
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "huggingface" / "hub"


def _model_configs(value: Any, path: tuple = ()):
    from ringctl.train.config import ModelConfig

    if isinstance(value, ModelConfig):
        yield path, value
    elif isinstance(value, BaseModel):
        for name in type(value).model_fields:
            yield from _model_configs(getattr(value, name), path + (name,))
    elif isinstance(value, (list, tuple)):
        for i, item in enumerate(value):
            yield from _model_configs(item, path + (i,))
    elif isinstance(value, dict):
        for k, item in value.items():
            yield from _model_configs(item, path + (k,))


def _find_value(data: Any, value: str, path: tuple = ()) -> tuple | None:
    """Path of the first leaf of `data` equal to `value` (where a stage's external file is named in the recipe)."""
    if isinstance(data, dict):
        for k, v in data.items():
            found = _find_value(v, value, path + (k,))
            if found is not None:
                return found
    elif isinstance(data, list):
        for i, v in enumerate(data):
            found = _find_value(v, value, path + (i,))
            if found is not None:
                return found
    elif isinstance(data, str) and data == value:
        return path
    return None


def input_paths(recipe) -> list[tuple[tuple, str, str]]:
    """(field path, local path, what it is) for every local input the recipe names."""
    out: list[tuple[tuple, str, str]] = []
    for path, model in _model_configs(recipe):
        name = model.name_or_path
        if looks_local(name) or Path(name).is_dir():
            out.append((path + ("name_or_path",), name, "model directory"))
        elif hub_offline() and name.count("/") == 1:  # a hub id: offline, it must be in the local cache
            cached = hub_cache_dir() / f"models--{name.replace('/', '--')}"
            out.append((path + ("name_or_path",), str(cached), f"hub model {name} (HF_HUB_OFFLINE is set: "
                                                               f"not downloaded) in the local cache:"))
    if recipe.resources.hostfile:
        out.append((("resources", "hostfile"), recipe.resources.hostfile, "hostfile"))
    for name, cfg in recipe.stages.items():
        dumped = cfg.model_dump(mode="json")
        for file in cfg.external_files():
            where = _find_value(dumped, file)
            if where is None:  # a file named indirectly (a preset)
                where = cfg.external_file_location(file)
            out.append((("stages", name, *(where or ())), file, "input file"))
    return out


def _unreadable(path: str, what: str) -> str | None:
    p = Path(os.path.expanduser(path))
    if not p.exists():
        return f"{what} {path} does not exist" + (f" (absolute: {p.absolute()})" if not p.is_absolute() else "")
    if what.startswith("hub model") and not p.is_dir():
        return f"{what} {path} does not exist"
    if what == "model directory" and not p.is_dir():
        return f"{what} {path} is not a directory"
    if not os.access(p, os.R_OK | (os.X_OK if p.is_dir() else 0)):
        return f"{what} {path} is not readable"
    return None


# ------------------------------------------------------------------------------------------------------------
# the check
# ------------------------------------------------------------------------------------------------------------
def _problem(loaded, path: tuple, message: str) -> Problem:
    from ringctl.recipe.positions import display_path

    pos = loaded.positions.locate(path)
    dotted = ".".join(str(p) if not isinstance(p, int) else f"[{p}]" for p in path).replace(".[", "[")
    return Problem(pos.file if pos else display_path(Path(loaded.source)), pos.line if pos else None,
                   pos.column if pos else None, dotted, message)


def problems(loaded, check_inputs: bool = True, only: Collection[str] | None = None) -> list[Problem]:
    """Missing or unreadable local inputs and a missing sandbox, as located problems. only: check the stages named
    (and the recipe-level inputs: model, hostfile), not the others."""
    recipe = loaded.recipe
    found = []
    if check_inputs:
        seen = set()
        for path, file, what in input_paths(recipe):
            if file in seen or (only is not None and path[0] == "stages" and path[1] not in only):
                continue
            seen.add(file)
            why = _unreadable(file, what)
            if why:
                found.append(_problem(loaded, path, why))
        if found:  # the hint once, on the last one
            last = found[-1]
            found[-1] = Problem(last.file, last.line, last.column, last.path, last.message +
                                "; pass --skip-input-check if the missing paths exist only where the stages run")
    summary = sandbox_summary(recipe, only)
    if summary is not None and not summary["ok"]:
        where = ("sandbox", "backend") if ("sandbox",) in loaded.positions.keys else ("stages", summary["stages"][0])
        found.append(_problem(loaded, where, f"stage{'s' * (len(summary['stages']) > 1)} "
                                             f"{', '.join(summary['stages'])} may run model-written code (code rewards): "
                                             f"{summary['detail']}"))
    return found


def enforce(loaded, check_inputs: bool = True, only: Collection[str] | None = None) -> None:
    """Raise RecipeError (exit 2) listing every problem; nothing has been created (or, on resume, run) yet.
    only: the stages still to run (resume); the inputs of other stages are not needed any more."""
    found = problems(loaded, check_inputs, only)
    if found:
        raise RecipeError(found)
