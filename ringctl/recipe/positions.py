"""YAML parsing that remembers where every key and value came from (file, line, column), and rejects
duplicate keys. Hydra/OmegaConf lose positions; validation errors are mapped back through this index."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from ringctl.errors import Problem

Path_ = tuple  # a field path: ("stages", "sft", "epochs")


@dataclass(frozen=True)
class Pos:
    file: str
    line: int
    column: int


@dataclass
class PositionIndex:
    """path -> position of the key and of the value. Later layers (fragments, the recipe, overrides) win."""

    keys: dict[Path_, Pos] = field(default_factory=dict)
    values: dict[Path_, Pos] = field(default_factory=dict)

    def update(self, other: PositionIndex, prefix: Path_ = ()) -> None:
        for p, pos in other.keys.items():
            self.keys[prefix + p] = pos
        for p, pos in other.values.items():
            self.values[prefix + p] = pos

    def set(self, path: Path_, pos: Pos) -> None:
        self.keys[path] = pos
        self.values[path] = pos

    def locate(self, path: Path_, prefer_key: bool = False) -> Pos | None:
        """Position of `path`, or of its nearest ancestor that has one."""
        table_order = (self.keys, self.values) if prefer_key else (self.values, self.keys)
        p = tuple(path)
        while True:
            for table in table_order:
                if p in table:
                    return table[p]
            if not p:
                return None
            p = p[:-1]


def _pos(file: str, mark) -> Pos:
    return Pos(file, mark.line + 1, mark.column + 1)


def _walk(node: yaml.Node, file: str, path: Path_, index: PositionIndex, problems: list[Problem]) -> None:
    if isinstance(node, yaml.MappingNode):
        seen: dict[Any, yaml.Node] = {}
        for key_node, value_node in node.value:
            key = key_node.value if isinstance(key_node, yaml.ScalarNode) else str(key_node.value)
            if key == "<<":  # YAML merge keys: leave them to the loader
                continue
            if key in seen:
                first = seen[key].start_mark.line + 1
                kp = _pos(file, key_node.start_mark)
                problems.append(Problem(file, kp.line, kp.column, ".".join(map(str, path + (key,))),
                                        f"duplicate key {key!r} (first defined on line {first})"))
                continue
            seen[key] = key_node
            index.keys[path + (key,)] = _pos(file, key_node.start_mark)
            index.values[path + (key,)] = _pos(file, value_node.start_mark)
            _walk(value_node, file, path + (key,), index, problems)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            index.values[path + (i,)] = _pos(file, item.start_mark)
            index.keys.setdefault(path + (i,), _pos(file, item.start_mark))
            _walk(item, file, path + (i,), index, problems)


def parse_yaml(text: str, file: str) -> tuple[Any, PositionIndex, list[Problem]]:
    """Parse YAML text; return (data, positions, problems). Syntax errors and duplicate keys are problems."""
    index = PositionIndex()
    problems: list[Problem] = []
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None) or getattr(e, "context_mark", None)
        msg = " ".join(str(x) for x in (getattr(e, "context", None), getattr(e, "problem", None)) if x) or str(e)
        return None, index, [Problem(file, mark.line + 1 if mark else None, mark.column + 1 if mark else None, "",
                                     f"YAML syntax error: {msg}")]
    if node is None:
        return {}, index, problems
    _walk(node, file, (), index, problems)
    if problems:
        return None, index, problems
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:  # e.g. an unknown tag
        mark = getattr(e, "problem_mark", None)
        return None, index, [Problem(file, mark.line + 1 if mark else None, mark.column + 1 if mark else None, "",
                                     f"YAML error: {e}")]
    return data, index, problems


def parse_file(path: Path) -> tuple[Any, PositionIndex, list[Problem]]:
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as e:
        return None, PositionIndex(), [Problem(str(path), None, None, "", f"cannot read recipe: {e.strerror}")]
    return parse_yaml(text, display_path(path))


def display_path(path: Path) -> str:
    """A path as the user would type it: relative to the working directory when it is below it."""
    path = Path(path)
    try:
        return str(path.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)
