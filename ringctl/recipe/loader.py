"""Load a recipe: YAML (positions, duplicate keys) -> Hydra compose (defaults, ${...}, overrides) -> Pydantic.

Every problem found is reported at once, located as `file:line:column: field.path: message`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from ringctl.errors import Problem, RecipeError, did_you_mean
from ringctl.recipe import registry
from ringctl.recipe.positions import Pos, PositionIndex, display_path, parse_file, parse_yaml

OVERRIDES_FILE = "<overrides>"


@dataclass
class LoadedRecipe:
    recipe: Any  # the validated Recipe model instance
    resolved: dict  # plain, fully interpolated dict (stored with the run as recipe.resolved.yaml)
    source: str  # path of the recipe file as given
    overrides: list[str] = field(default_factory=list)
    positions: PositionIndex = field(default_factory=PositionIndex)

    def to_yaml(self) -> str:
        return dump_yaml(self.resolved)


def dump_yaml(data: dict) -> str:
    return yaml.safe_dump(data, sort_keys=False, default_flow_style=False, allow_unicode=True)


def _dotted(path) -> str:
    out = ""
    for p in path:
        out += f"[{p}]" if isinstance(p, int) else (f".{p}" if out else str(p))
    return out


# --------------------------------------------------------------------------------------------------
# positions of the defaults list (fragments) and of the command-line overrides
# --------------------------------------------------------------------------------------------------

def _fragment_positions(recipe_path: Path, data: dict, index: PositionIndex, problems: list[Problem]) -> PositionIndex:
    """Positions for values that come from the defaults list; the recipe's own keys are layered on top."""
    merged = PositionIndex()
    defaults = data.get("defaults") if isinstance(data, dict) else None
    if not isinstance(defaults, list):
        return merged
    base = recipe_path.parent
    for i, entry in enumerate(defaults):
        if entry == "_self_":
            continue
        if isinstance(entry, dict) and len(entry) == 1:
            (group, option), = entry.items()
            group, _, pkg = str(group).partition("@")
            rel, pkg = f"{group.lstrip('/')}/{option}", pkg or None
        elif isinstance(entry, str):
            rel, _, pkg = entry.lstrip("/").partition("@")
            pkg = pkg or None
        else:
            continue
        frag = base / f"{rel}.yaml"
        if not frag.exists():
            pos = index.locate(("defaults", i))
            problems.append(Problem(pos.file if pos else display_path(recipe_path), pos.line if pos else None,
                                    pos.column if pos else None, f"defaults[{i}]",
                                    f"fragment '{rel}' not found (looked for {display_path(frag)})"))
            continue
        _, frag_index, frag_problems = parse_file(frag)
        problems.extend(frag_problems)
        if pkg is None:
            header = re.match(r"#\s*@package\s+(\S+)", frag.read_text(encoding="utf-8"))
            pkg = header.group(1) if header else ".".join(Path(rel).parent.parts)
        prefix = () if pkg in ("_global_", "") else tuple(pkg.split("."))
        merged.update(frag_index, prefix)
    return merged


def _override_positions(overrides: list[str], problems: list[Problem]) -> tuple[PositionIndex, list]:
    from hydra.core.override_parser.overrides_parser import OverridesParser

    index = PositionIndex()
    parsed = []
    parser = OverridesParser.create()
    for i, text in enumerate(overrides, start=1):
        try:
            (ov,) = parser.parse_overrides([text])
        except Exception as e:  # hydra's OverrideParseException
            problems.append(Problem(OVERRIDES_FILE, i, 1, "", f"cannot parse override {text!r}: "
                                    f"{str(e).splitlines()[0]}"))
            continue
        index.set(tuple(ov.key_or_group.split(".")), Pos(OVERRIDES_FILE, i, 1))
        parsed.append((i, text, ov))
    return index, parsed


def _check_override_keys(data: dict, parsed: list, problems: list[Problem]) -> None:
    """Plain `key=value` and `~key` must name an existing key: a typo is never silently ignored."""
    added: set[str] = set()
    for i, text, ov in parsed:
        if ov.is_add() or ov.is_force_add():
            added.add(ov.key_or_group)
            continue
        if any(ov.key_or_group == a or ov.key_or_group.startswith(a + ".") for a in added):
            continue
        node: Any = data
        path = ov.key_or_group.split(".")
        for depth, part in enumerate(path):
            if isinstance(node, dict) and part in node:
                node = node[part]
                continue
            if isinstance(node, dict):
                hint = did_you_mean(part, node.keys())
                where = ".".join(path[:depth]) or "the recipe"
                problems.append(Problem(OVERRIDES_FILE, i, 1, ov.key_or_group,
                                        f"override {text!r} names a key that does not exist: no {part!r} in "
                                        f"{where}{hint}; to add a new key use '+{text.lstrip('~')}'"))
            break


# --------------------------------------------------------------------------------------------------
# Hydra compose
# --------------------------------------------------------------------------------------------------

def _compose(recipe_path: Path, overrides: list[str], problems: list[Problem], index: PositionIndex,
             resolve: bool = True) -> dict | None:
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=str(recipe_path.parent.resolve()), version_base="1.3"):
            cfg = compose(config_name=recipe_path.stem, overrides=overrides)
    except Exception as e:  # hydra composition errors: missing fragment, + on an existing key, ...
        msg = " ".join(line.strip() for line in str(e).splitlines() if line.strip())
        problems.append(Problem(OVERRIDES_FILE if overrides else display_path(recipe_path), None, None, "", msg))
        return None
    finally:
        GlobalHydra.instance().clear()
    try:
        return OmegaConf.to_container(cfg, resolve=resolve)
    except OmegaConfBaseException as e:
        key = getattr(e, "full_key", "") or ""
        path = tuple(int(p) if p.isdigit() else p for p in re.split(r"\.|\[|\]", key) if p)
        pos = index.locate(path)
        msg = str(e).splitlines()[0]
        problems.append(Problem(pos.file if pos else display_path(recipe_path), pos.line if pos else None,
                                pos.column if pos else None, key, f"interpolation failed: {msg}"))
        return None


# --------------------------------------------------------------------------------------------------
# Pydantic errors -> located problems
# --------------------------------------------------------------------------------------------------

def _model_at(model: type[BaseModel] | None, loc: tuple) -> type[BaseModel] | None:
    """The pydantic model class that owns the field at `loc` (for 'did you mean' on unknown keys)."""
    import typing

    cur: Any = model
    for part in loc:
        if cur is None:
            return None
        if isinstance(cur, type) and issubclass(cur, BaseModel):
            f = cur.model_fields.get(part) if isinstance(part, str) else None
            if f is None:
                return None
            cur = f.annotation
        else:
            cur = None
            continue
        # unwrap Optional / dict / list / Annotated to a model class if there is one
        for _ in range(4):
            origin = typing.get_origin(cur)
            if origin is None:
                break
            args = [a for a in typing.get_args(cur) if a is not type(None)]
            models = [a for a in args if isinstance(a, type) and issubclass(a, BaseModel)]
            cur = models[0] if models else (args[-1] if args else None)
    return cur if isinstance(cur, type) and issubclass(cur, BaseModel) else None


def _strip_union_tags(loc: tuple, data: dict) -> tuple:
    """Pydantic puts the discriminator tag into the location: stages.sft.<kind>.epochs -> stages.sft.epochs.
    It does the same for other tagged unions (e.g. data_filter steps): drop any part equal to the `kind`
    or `type` value of the dict it indexes."""
    out: list = []
    node: Any = data
    for part in loc:
        if isinstance(node, dict) and part not in node and part in (node.get("kind"), node.get("type")):
            continue
        out.append(part)
        if isinstance(node, dict):
            node = node.get(part)
        elif isinstance(node, list) and isinstance(part, int) and part < len(node):
            node = node[part]
        else:
            node = None
    return tuple(out)


def _stage_config_class(kind: str):
    try:
        return registry.load_stage_module(kind).Config
    except registry.UnknownKind:
        return None


def validation_problems(err: ValidationError, data: dict, model: type[BaseModel], index: PositionIndex,
                        default_file: str) -> list[Problem]:
    problems = []
    for e in err.errors():
        loc = _strip_union_tags(tuple(e["loc"]), data)
        etype = e["type"]
        msg = e["msg"]
        prefer_key = False
        if etype == "extra_forbidden":
            prefer_key = True
            owner = _model_at(model, loc[:-1])
            if owner is None and len(loc) >= 3 and loc[0] == "stages":
                stage = data.get("stages", {}).get(loc[1], {})
                cls = _stage_config_class(stage.get("kind", "")) if isinstance(stage, dict) else None
                owner = _model_at(cls, loc[2:-1]) if cls else None
            hint = did_you_mean(loc[-1], owner.model_fields) if owner else ""
            msg = f"unknown key {loc[-1]!r}{hint}"
        elif etype == "union_tag_invalid" or (etype == "literal_error" and len(loc) == 3 and loc[0] == "stages"
                                               and loc[2] == "kind"):
            tag = e.get("ctx", {}).get("tag", e.get("input"))
            known = registry.available_builtin_kinds()
            msg = (f"unknown stage kind {tag!r}{did_you_mean(tag, known)}; known kinds: {', '.join(known)} "
                   f"(or a plugin module path such as my_package.my_stage)")
            loc = loc if loc[-1] == "kind" else loc + ("kind",)
        elif etype == "union_tag_not_found":
            msg = "missing 'kind' (which stage this is)"
        elif etype == "missing":
            msg = f"missing required field {loc[-1]!r}"
            prefer_key = True
        elif "input" in e and etype not in ("value_error", "assertion_error"):
            got = e["input"]
            if isinstance(got, (str, int, float, bool)) or got is None:
                msg = f"{msg.split(', ')[0]} (got {got!r})"
        elif etype == "value_error":
            msg = msg.removeprefix("Value error, ")
        pos = index.locate(loc[:-1] if etype == "missing" else loc, prefer_key=prefer_key)
        problems.append(Problem(pos.file if pos else default_file, pos.line if pos else None,
                                pos.column if pos else None, _dotted(loc), msg))
    return problems


# --------------------------------------------------------------------------------------------------
# entry points
# --------------------------------------------------------------------------------------------------

def _plugin_kinds(data: dict, index: PositionIndex, file: str, problems: list[Problem]) -> tuple[str, ...]:
    kinds = []
    stages = data.get("stages") if isinstance(data, dict) else None
    if not isinstance(stages, dict):
        return ()
    for name, st in stages.items():
        kind = st.get("kind") if isinstance(st, dict) else None
        if isinstance(kind, str) and registry.is_plugin_kind(kind):
            try:
                registry.load_stage_module(kind)
                kinds.append(kind)
            except registry.UnknownKind as e:
                pos = index.locate(("stages", name, "kind"))
                problems.append(Problem(pos.file if pos else file, pos.line if pos else None,
                                        pos.column if pos else None, f"stages.{name}.kind", str(e)))
    return tuple(sorted(set(kinds)))


def validate_data(data: Any, index: PositionIndex, file: str) -> tuple[Any, list[Problem]]:
    """Pydantic + DAG + cross-field validation of an already composed recipe dict."""
    from ringctl.recipe.dag import dag_problems
    from ringctl.recipe.schema import recipe_model

    problems: list[Problem] = []
    if not isinstance(data, dict):
        return None, [Problem(file, 1, 1, "", "a recipe must be a YAML mapping (name:, stages:, ...)")]
    plugins = _plugin_kinds(data, index, file, problems)
    model = recipe_model(plugins)
    recipe = None
    broken = {p.path for p in problems}  # plugin stages that failed to import: one error each is enough
    try:
        recipe = model.model_validate(data)
    except ValidationError as err:
        problems += [p for p in validation_problems(err, data, model, index, file)
                     if not any(p.path == b or p.path.startswith(b.rsplit(".", 1)[0] + ".") for b in broken)]
    # DAG problems are reported even when some stage failed validation: validate stages one by one
    stage_cfgs = {}
    stages = data.get("stages")
    if isinstance(stages, dict):
        for name, st in stages.items():
            cls = _stage_config_class(st.get("kind", "")) if isinstance(st, dict) else None
            if cls is None:
                continue
            try:
                stage_cfgs[name] = cls.model_validate(st)
            except ValidationError:
                pass
        for p in dag_problems(stage_cfgs, all_stage_names=list(stages)):
            pos = index.locate(p.path)
            problems.append(Problem(pos.file if pos else file, pos.line if pos else None,
                                    pos.column if pos else None, _dotted(p.path), p.message))
    if recipe is not None and not problems:
        world = recipe.resources.world_size
        for name, cfg in recipe.stages.items():
            for msg in cfg.validate_for(recipe, world):
                # a problem is a message about the stage, or (field path inside the stage, message)
                sub: tuple = ()
                if isinstance(msg, tuple):
                    sub, msg = tuple(msg[0]), msg[1]
                pos = index.locate(("stages", name, *sub)) or index.locate(("stages", name))
                where = _dotted(("stages", name, *sub))
                problems.append(Problem(pos.file if pos else file, pos.line if pos else None,
                                        pos.column if pos else None, where, msg))
    return (recipe if not problems else None), problems


def load_recipe(path: str | Path, overrides: list[str] | None = None) -> LoadedRecipe:
    """Load, compose and validate a recipe file. Raises RecipeError with every problem found."""
    overrides = list(overrides or [])
    recipe_path = Path(path)
    file = display_path(recipe_path)
    if not recipe_path.exists():
        raise RecipeError([Problem(file, None, None, "", "recipe file not found")])
    if recipe_path.suffix not in (".yaml", ".yml"):
        raise RecipeError([Problem(file, None, None, "", "a recipe must be a .yaml file")])
    raw, own_index, problems = parse_file(recipe_path)
    if problems:
        raise RecipeError(problems)
    if raw is not None and not isinstance(raw, dict):
        raise RecipeError([Problem(file, 1, 1, "", "a recipe must be a YAML mapping (name:, stages:, ...)")])
    index = _fragment_positions(recipe_path, raw or {}, own_index, problems)
    index.update(own_index)
    ov_index, parsed = _override_positions(overrides, problems)
    if problems:
        raise RecipeError(problems)
    if parsed:
        # check plain overrides against the composed recipe first, for a located error with "did you mean"
        base = _compose(recipe_path, [], problems, index, resolve=False)
        if base is not None:
            _check_override_keys(base, parsed, problems)
        if problems:
            raise RecipeError(problems)
    resolved = _compose(recipe_path, overrides, problems, index)
    if resolved is None:
        raise RecipeError(problems)
    index.update(ov_index)
    resolved.pop("defaults", None)
    recipe, more = validate_data(resolved, index, file)
    problems += more
    if problems:
        raise RecipeError(problems)
    return LoadedRecipe(recipe=recipe, resolved=recipe.model_dump(mode="json"), source=str(path),
                        overrides=overrides, positions=index)


def load_resolved(text: str, file: str) -> LoadedRecipe:
    """Load a recipe stored with a run (already composed and interpolated): YAML + Pydantic only."""
    data, index, problems = parse_yaml(text, file)
    if problems:
        raise RecipeError(problems)
    recipe, problems = validate_data(data, index, file)
    if problems:
        raise RecipeError(problems)
    return LoadedRecipe(recipe=recipe, resolved=recipe.model_dump(mode="json"), source=file, positions=index)
