from __future__ import annotations

from ringctl.pipeline.dag import find_cycle, topological_order

        self.refs = [StageRef(f"{d}.out") for d in deps]

def _stages(spec: dict[str, list[str]]):
    from typing import Literal

    from ringctl.recipe.base import StageConfig, StageRef

    class C(StageConfig):
        kind: Literal["x"] = "x"
        refs: list[StageRef] = []

    return {n: C(refs=[f"{d}.out" for d in deps]) for n, deps in spec.items()}

def test_topological_order_keeps_recipe_order_among_ready_stages():
    stages = _stages({"c": ["a"], "a": [], "b": [], "d": ["c", "b"]})
    assert topological_order(stages) == ["a", "c", "b", "d"]

def test_find_cycle_names_the_cycle():
    assert find_cycle({"a": ["b"], "b": ["c"], "c": ["a"], "d": []}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": [], "b": ["a"]}) is None
