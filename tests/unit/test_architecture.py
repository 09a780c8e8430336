"""The layering of ringctl/ and stages/ (docs/architecture.md), read from the source with `ast`: nothing is imported.

Every import counts, at module level and inside functions (the project imports torch & co inside the functions
that need them, and those imports are dependencies all the same), `if TYPE_CHECKING:` blocks included. An import
names the deepest project module it reaches: `from ringctl.eval import report` is ringctl.eval.report,
`from ringctl.eval.report import table` is ringctl.eval.report. A string constant that spells a stage module
(``"stages.rl"``, read by importlib) counts as an import of it. Failures print the offending import with file:line.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from functools import cache
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
LIBRARY, STAGES = "ringctl", "stages"

# ringctl/'s layers, lowest first: a module imports from its own layer or below, never above. Entries are module
# or package names below ringctl; a module belongs to the entry that is its longest prefix (recipe.base is base,
# recipe.schema is recipe). `ringctl` itself (its __init__) is base.
LAYERS: list[tuple[str, tuple[str, ...]]] = [
    ("base", ("", "errors", "chaos", "artifacts", "plotting", "display", "stats", "dist", "recipe.base",
              "recipe.positions")),
    ("train", ("train",)),
    ("rewards", ("rewards",)),
    ("rollout", ("rollout",)),
    ("data", ("data",)),
    ("eval", ("eval",)),
    ("rl", ("rl",)),
    ("selection", ("selection",)),
    ("recipe", ("recipe",)),  # schema, loader, registry
    ("pipeline", ("pipeline", "tracking")),
    ("commands", ("cli", "commands", "mlflow_ui", "__main__")),
]
MAX_STAGE_FUNCTION_LINES = 80  # a stage is a short recipe over the library


@dataclass(frozen=True)
class Import:
    importer: str  # module name
    target: str  # the deepest project module the import names
    path: Path
    line: int

    def __str__(self) -> str:
        return f"{self.path.relative_to(ROOT)}:{self.line}: {self.importer} imports {self.target}"


@cache
def modules(top: str) -> dict[str, Path]:
    """Module name -> source file, for every module of a top-level package (packages by their __init__.py)."""
    out = {}
    for path in sorted((ROOT / top).rglob("*.py")):
        parts = path.relative_to(ROOT).with_suffix("").parts
        out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return out


def _project_module(name: str | None) -> str | None:
    """`name` if it is a module of ringctl/ or stages/, else its deepest parent that is (None if none is)."""
    top = (name or "").split(".")[0]
    if top not in (LIBRARY, STAGES):
        return None
    while name:
        if name in modules(top):
            return name
        name = name.rpartition(".")[0]
    return None


def _base_of(module: str, path: Path, node: ast.ImportFrom) -> str | None:
    if not node.level:
        return node.module
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    parts = package.split(".")[:len(package.split(".")) - (node.level - 1)]
    return ".".join([*parts, node.module] if node.module else parts)


@cache
def imports_of(module: str) -> tuple[Import, ...]:
    path = modules(module.split(".")[0])[module]
    return tuple(parse_imports(module, path, path.read_text(encoding="utf-8")))


def parse_imports(module: str, path: Path, source: str) -> list[Import]:
    found: list[Import] = []

    def add(name: str | None, line: int) -> None:
        target = _project_module(name)
        if target is not None and target != module:
            found.append(Import(module, target, path, line))

    for node in ast.walk(ast.parse(source, filename=str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                add(alias.name, node.lineno)
        elif isinstance(node, ast.ImportFrom):
            base = _base_of(module, path, node)
            for alias in node.names:
                add(f"{base}.{alias.name}" if alias.name != "*" else base, node.lineno)
        elif isinstance(node, ast.Constant) and isinstance(node.value, str) and \
                node.value.startswith(STAGES + ".") and node.value in modules(STAGES):
            add(node.value, node.lineno)
    return sorted(set(found), key=lambda imp: (imp.line, imp.target))


def all_imports(top: str) -> list[Import]:
    return [imp for name in modules(top) for imp in imports_of(name)]


def layer_of(module: str) -> int:
    """Index in LAYERS of a ringctl module; fails for a module no layer holds."""
    rel = module.removeprefix(LIBRARY).removeprefix(".")
    best = None
    for i, (_, entries) in enumerate(LAYERS):
        for entry in entries:
            if (rel == entry or rel.startswith(entry + ".") or entry == "") and \
                    (best is None or len(entry) > len(best[1])):
                best = (i, entry)
    assert best is not None and (best[1] or rel == ""), \
        f"{module} is in no layer: add its package to LAYERS in {Path(__file__).relative_to(ROOT)} and to " \
        f"docs/architecture.md"
    return best[0]


def registry_modules() -> set[str]:
    """The ringctl module(s) that define BUILTIN_KINDS at module level: the stage registry."""
    out = set()
    for name, path in modules(LIBRARY).items():
        for node in ast.parse(path.read_text(encoding="utf-8")).body:
            targets = node.targets if isinstance(node, ast.Assign) else [node.target] \
                if isinstance(node, ast.AnnAssign) else []
            if any(isinstance(t, ast.Name) and t.id == "BUILTIN_KINDS" for t in targets):
                out.add(name)
    return out


def test_every_ringctl_module_has_a_layer():
    for name in modules(LIBRARY):
        layer_of(name)


def test_ringctl_imports_stages_only_in_the_registry():
    registry = registry_modules()
    assert len(registry) == 1, f"exactly one ringctl module defines BUILTIN_KINDS (the stage registry), found " \
                               f"{sorted(registry) or 'none'}"
    bad = [imp for imp in all_imports(LIBRARY) if imp.target.split(".")[0] == STAGES and imp.importer not in registry]
    assert not bad, "ringctl/ reaches stages/ only through the registry " \
                    f"({next(iter(registry))}):\n" + "\n".join(map(str, bad))


def test_no_stage_imports_another_stage():
    # stages/rl_config.py counts as a stage module: issue 21 merges it into stages/rl.py, and until then
    # stages/rl.py importing it fails here (on purpose; not skipped).
    bad = [imp for imp in all_imports(STAGES) if imp.target.split(".")[0] == STAGES]
    hint = "\n(issue 21: stages/rl_config.py is to be merged into stages/rl.py)" \
        if any("rl_config" in imp.target for imp in bad) else ""
    assert not bad, "a stage uses the library, never another stage; move what both need into ringctl/:\n" + \
        "\n".join(map(str, bad)) + hint


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One shortest cycle through each strongly connected component of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []

    def visit(v: str) -> None:  # recursion depth is bounded by the number of modules (a few hundred)
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                components.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    cycles = []
    for component in components:
        start, members = component[0], set(component)
        paths, frontier = {start: [start]}, [start]  # breadth-first: the shortest way back to start
        while frontier and start not in {w for v in frontier for w in graph[v]}:
            nxt = []
            for v in frontier:
                for w in sorted(graph[v] & members):
                    if w not in paths:
                        paths[w] = [*paths[v], w]
                        nxt.append(w)
            frontier = nxt
        last = next(v for v in frontier if start in graph[v])
        cycles.append([*paths[last], start])
    return cycles


def test_no_import_cycle_in_ringctl():
    edges = [imp for imp in all_imports(LIBRARY) if imp.target.split(".")[0] == LIBRARY]
    graph: dict[str, set[str]] = {name: set() for name in modules(LIBRARY)}
    where: dict[tuple[str, str], Import] = {}
    for imp in edges:
        graph[imp.importer].add(imp.target)
        where.setdefault((imp.importer, imp.target), imp)
    cycles = _cycles(graph)
    report = ["cycle " + " -> ".join(c) + ":\n" + "\n".join(f"  {where[a, b]}" for a, b in zip(c, c[1:]))
              for c in cycles]
    assert not cycles, "import cycles among ringctl modules (move the shared piece down, or merge):\n" + \
        "\n".join(report)


def test_ringctl_imports_point_down_the_layers():
    bad = []
    for imp in all_imports(LIBRARY):
        if imp.target.split(".")[0] != LIBRARY:
            continue
        mine, theirs = layer_of(imp.importer), layer_of(imp.target)
        if theirs > mine:
            bad.append(f"{imp} ({LAYERS[mine][0]} -> {LAYERS[theirs][0]}, a higher layer)")
    order = " < ".join(name for name, _ in LAYERS)
    assert not bad, f"upward imports in ringctl/ (layers, lowest first: {order}):\n" + "\n".join(bad)


def test_stage_functions_are_short():
    long = []
    for path in modules(STAGES).values():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                length = node.end_lineno - node.lineno + 1
                if length >= MAX_STAGE_FUNCTION_LINES:
                    long.append((length, f"{path.relative_to(ROOT)}:{node.lineno}: {node.name}: {length} lines"))
    assert not long, f"stage functions of {MAX_STAGE_FUNCTION_LINES} lines or more (a stage is a short recipe; " \
                     f"move the machinery into ringctl/):\n" + "\n".join(text for _, text in sorted(long, reverse=True))


def test_the_parser_sees_every_kind_of_import():
    """Function-level imports, `from package import module`, relative imports and a stage named by a string."""
    source = (
        "import json\n"
        "from ringctl.errors import BadInput\n"
        "def f():\n"
        "    from ringctl.eval import report, metrics\n"
        "    import ringctl.rl.loss as loss\n"
        "    from . import records\n"
        "    from .filters.base import Filter\n"
        "    return {'rl': 'stages.rl', 'stages': 'stages'}\n"
    )
    path = ROOT / "ringctl" / "data" / "readers.py"
    found = {(imp.target, imp.line) for imp in parse_imports("ringctl.data.readers", path, source)}
    assert found == {("ringctl.errors", 2), ("ringctl.eval.report", 4), ("ringctl.eval.metrics", 4),
                     ("ringctl.rl.loss", 5), ("ringctl.data.records", 6), ("ringctl.data.filters.base", 7),
                     ("stages.rl", 8)}
    assert str(next(imp for imp in parse_imports("ringctl.data.readers", path, source) if imp.line == 5)) == \
        "ringctl/data/readers.py:5: ringctl.data.readers imports ringctl.rl.loss"


def test_cycles_are_found_and_reported_shortest():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a", "d"}, "d": set(), "e": {"f"}, "f": {"e"}}
    assert _cycles(graph) == [["a", "b", "c", "a"], ["e", "f", "e"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []


def test_the_docs_give_the_enforced_layer_order():
    doc = (ROOT / "docs" / "architecture.md").read_text(encoding="utf-8")
    assert " < ".join(name for name, _ in LAYERS) in doc, "docs/architecture.md states the layer order LAYERS holds"
