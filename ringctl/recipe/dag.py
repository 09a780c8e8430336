"""The stage DAG: edges come from the typed `<stage>.<output>` references inside the stage configs."""

from __future__ import annotations

from dataclasses import dataclass

from ringctl.errors import did_you_mean
from ringctl.recipe import registry
from ringctl.recipe.base import StageConfig, iter_refs


@dataclass(frozen=True)
class DagProblem:
    path: tuple
    message: str


def stage_refs(cfg: StageConfig) -> list[tuple[tuple, str]]:
    """(field path inside the stage config, reference) pairs, in field order."""
    return list(iter_refs(cfg))


def dependencies(cfg: StageConfig) -> list[str]:
    seen: list[str] = []
    for _, ref in stage_refs(cfg):
        if ref.stage not in seen:
            seen.append(ref.stage)
    return seen


def _declared_outputs(cfg: StageConfig) -> tuple[str, ...] | None:
    try:
        return tuple(registry.load_stage_module(cfg.kind).OUTPUTS)
    except registry.UnknownKind:
        return None


def find_cycle(edges: dict[str, list[str]]) -> list[str] | None:
    """A cycle as [a, b, ..., a] if the graph (node -> dependencies) has one, else None."""
    WHITE, GREY, BLACK = 0, 1, 2
    color = {n: WHITE for n in edges}
    stack: list[str] = []

    def visit(n: str) -> list[str] | None:
        color[n] = GREY
        stack.append(n)
        for d in edges.get(n, []):
            if d not in color:
                continue
            if color[d] == GREY:
                return stack[stack.index(d):] + [d]
            if color[d] == WHITE and (c := visit(d)):
                return c
        stack.pop()
        color[n] = BLACK
        return None

    for n in edges:
        if color[n] == WHITE and (c := visit(n)):
            return c
    return None


def dag_problems(stage_cfgs: dict[str, StageConfig], all_stage_names: list[str]) -> list[DagProblem]:
    """Unknown stage, undeclared output, self reference, cycles."""
    problems = []
    edges: dict[str, list[str]] = {}
    for name, cfg in stage_cfgs.items():
        edges[name] = []
        for fpath, ref in stage_refs(cfg):
            path = ("stages", name) + fpath
            if ref.stage == name:
                problems.append(DagProblem(path, f"stage {name!r} references its own output {ref!r}"))
                continue
            if ref.stage not in all_stage_names:
                problems.append(DagProblem(path, f"reference {ref!r}: no stage named {ref.stage!r}"
                                                 f"{did_you_mean(ref.stage, all_stage_names)}; stages: "
                                                 f"{', '.join(all_stage_names)}"))
                continue
            target = stage_cfgs.get(ref.stage)
            outputs = _declared_outputs(target) if target is not None else None
            if outputs is not None and ref.output not in outputs:
                problems.append(DagProblem(path, f"reference {ref!r}: stage {ref.stage!r} ({target.kind}) has no "
                                                 f"output {ref.output!r}{did_you_mean(ref.output, outputs)}; it "
                                                 f"declares: {', '.join(outputs)}"))
                continue
            edges[name].append(ref.stage)
    cycle = find_cycle(edges)
    if cycle:
        problems.append(DagProblem(("stages", cycle[0]), "dependency cycle: " + " -> ".join(cycle)))
    return problems


def topological_order(stages: dict[str, StageConfig]) -> list[str]:
    """Dependencies first; among ready stages, recipe order (stable, so plans read like the recipe)."""
    deps = {n: [d for d in dependencies(c) if d in stages] for n, c in stages.items()}
    order: list[str] = []
    done: set[str] = set()
    while len(order) < len(stages):
        ready = [n for n in stages if n not in done and all(d in done for d in deps[n])]
        if not ready:
            raise ValueError("dependency cycle: " + " -> ".join(find_cycle(deps) or []))
        order.append(ready[0])
        done.add(ready[0])
    return order


def downstream(stages: dict[str, StageConfig], name: str) -> list[str]:
    """Stages that (transitively) depend on `name`."""
    out: list[str] = []
    for n in topological_order(stages):
        if n != name and any(d == name or d in out for d in dependencies(stages[n])):
            out.append(n)
    return out
