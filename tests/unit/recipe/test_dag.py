from __future__ import annotations

from typing import Literal

from ringctl.recipe.base import StageConfig, StageRef
from ringctl.recipe.dag import downstream, find_cycle, topological_order


class _Cfg(StageConfig):
    kind: Literal["x"] = "x"
    refs: list[StageRef] = []


def _stages(spec: dict[str, list[str]]):
    return {n: _Cfg(refs=[f"{d}.out" for d in deps]) for n, deps in spec.items()}


def test_topological_order_keeps_recipe_order_among_ready_stages():
    stages = _stages({"c": ["a"], "a": [], "b": [], "d": ["c", "b"]})
    assert topological_order(stages) == ["a", "c", "b", "d"]
    assert downstream(stages, "a") == ["c", "d"]


def test_find_cycle_names_the_cycle():
    assert find_cycle({"a": ["b"], "b": ["c"], "c": ["a"], "d": []}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": [], "b": ["a"]}) is None
