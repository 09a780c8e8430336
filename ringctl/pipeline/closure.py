"""The code a stage can execute: the import closure of its module, found by reading source files (nothing is
imported, so `ringctl plan` never pulls in torch), and the per-file hashes its code version is made of.

The closure starts at the stage module and stays within the project's packages: `ringctl` and the stage
module's own top-level package (`stages` for the built-in kinds, the plugin's package for `kind: pkg.module`).
A module's dependencies, read with `ast` from its source:

- `import a.b.c` imports a, a.b and a.b.c (a package import runs its `__init__.py`, so every parent's counts);
  `from a.b import c` imports a.b and, when c is a submodule, a.b.c; relative imports resolve against the
  importing module's package. Imports inside functions count (stages import heavy things inside `run()`);
  imports under `if TYPE_CHECKING:` do not (they never run).
- Dynamic imports. A string literal that spells a module of the same top-level package (e.g. a registry
  ``{"math": "ringctl.rewards.math_answer"}`` read by `importlib.import_module`) counts as an import of it; an
  f-string whose literal head is a package (``f"ringctl.rewards.games.{domain}"``) imports that whole package.
  A call to `importlib.import_module` / `__import__` whose argument is neither makes the closure take the whole
  package of the calling module (the targets cannot be read, so everything it could reach is assumed).
  The one exception is the stage registry (`ringctl.recipe.registry`): its dynamic import loads a stage module
  by kind, and the stage being fingerprinted is the closure's root (another stage's module is code this stage
  runs only when it imports it, which the rules above see).

Paths are reported relative to the folder that holds the top-level package (``ringctl/rl/loss.py``,
``stages/sft.py``, ``my_plugin/stage.py``), so a fingerprint does not depend on where the project is installed.
"""

from __future__ import annotations

import ast
import hashlib
import importlib.util
from functools import cache
from pathlib import Path

LIBRARY = "ringctl"
# loads stage modules by kind (see the module docstring); its dynamic import is not followed
STAGE_REGISTRY = "ringctl.recipe.registry"
_DYNAMIC_IMPORTS = {"import_module", "__import__"}


@cache
def _package_dirs(top: str) -> tuple[Path, ...]:
    """Folders of a top-level package (several for a namespace package), found without importing it."""
    try:
        spec = importlib.util.find_spec(top)
    except (ImportError, ValueError):
        return ()
    if spec is None or not spec.submodule_search_locations:
        return ()
    return tuple(Path(p) for p in spec.submodule_search_locations)


@cache
def module_file(name: str) -> Path | None:
    """The source file of a project module (`__init__.py` for a package); None when `name` is no module of an
    importable package (a class or function imported with `from`, a third-party name, a namespace folder)."""
    top, *rest = name.split(".")
    for base in _package_dirs(top):
        path = base.joinpath(*rest)
        if (path / "__init__.py").is_file():
            return path / "__init__.py"
        if rest and path.with_suffix(".py").is_file():
            return path.with_suffix(".py")
    return None


def _is_package(name: str) -> bool:
    f = module_file(name)
    return f is not None and f.name == "__init__.py"


def _package_modules(package: str) -> set[str]:
    """A package and every module below it."""
    f = module_file(package)
    if f is None or f.name != "__init__.py":
        return {package} if f is not None else set()
    out = set()
    for p in f.parent.rglob("*.py"):
        parts = p.relative_to(f.parent).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out.add(".".join((package, *parts)))
    return out


def _with_parents(name: str) -> list[str]:
    parts = name.split(".")
    return [".".join(parts[:i]) for i in range(1, len(parts) + 1)]


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or \
        (isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _walk(tree: ast.AST):
    """ast.walk, minus the bodies of `if TYPE_CHECKING:` blocks."""
    stack = [tree]
    while stack:
        node = stack.pop()
        yield node
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            stack.extend(node.orelse)
            continue
        stack.extend(ast.iter_child_nodes(node))


def _resolve_relative(module: str, level: int, target: str | None) -> str | None:
    package = module if _is_package(module) else module.rpartition(".")[0]
    parts = package.split(".") if package else []
    if level - 1 > len(parts) - 1:
        return None  # beyond the top-level package
    base = parts[:len(parts) - (level - 1)]
    return ".".join([*base, target] if target else base) or None


def _dotted(text: str) -> bool:
    return all(p.isidentifier() for p in text.split("."))


@cache
def module_dependencies(name: str) -> frozenset[str]:
    """Names of the modules `name` imports (statically or through the dynamic-import rules), not yet filtered to
    the project's packages; parents are included."""
    path = module_file(name)
    if path is None:
        return frozenset()
    tree = ast.parse(path.read_bytes(), filename=str(path))
    top = name.split(".")[0]
    deps: set[str] = set()
    for node in _walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                deps.update(_with_parents(alias.name))
        elif isinstance(node, ast.ImportFrom):
            base = _resolve_relative(name, node.level, node.module) if node.level else node.module
            if base is None:
                continue
            deps.update(_with_parents(base))
            for alias in node.names:
                if alias.name != "*" and module_file(f"{base}.{alias.name}") is not None:
                    deps.add(f"{base}.{alias.name}")
        elif isinstance(node, ast.Constant) and isinstance(node.value, str):
            text = node.value
            if text.split(".")[0] == top and _dotted(text) and module_file(text) is not None:
                deps.update(_with_parents(text))
        elif isinstance(node, ast.JoinedStr):
            package = _package_head(node)
            if package and package.split(".")[0] == top:
                deps.update(_with_parents(package))
                deps.update(_package_modules(package))
        elif isinstance(node, ast.Call) and name != STAGE_REGISTRY and _calls_dynamic_import(node):
            arg = node.args[0] if node.args else None
            readable = (isinstance(arg, ast.Constant) and isinstance(arg.value, str)) or \
                (isinstance(arg, ast.JoinedStr) and _package_head(arg) is not None)
            if not readable:
                deps.update(_package_modules(name if _is_package(name) else name.rpartition(".")[0] or name))
    return frozenset(deps)


def _package_head(node: ast.JoinedStr) -> str | None:
    """The package an f-string such as f"pkg.sub.{name}" names modules of, or None."""
    head = node.values[0].value if node.values and isinstance(node.values[0], ast.Constant) else None
    if not isinstance(head, str) or not head.endswith("."):
        return None
    package = head[:-1]
    return package if _dotted(package) and _is_package(package) else None


def _calls_dynamic_import(node: ast.Call) -> bool:
    f = node.func
    return (isinstance(f, ast.Name) and f.id in _DYNAMIC_IMPORTS) or \
        (isinstance(f, ast.Attribute) and f.attr in _DYNAMIC_IMPORTS)


@cache
def import_closure(root: str) -> tuple[str, ...]:
    """Every project module the module `root` can execute (itself included), sorted. Project = `ringctl` plus
    `root`'s top-level package."""
    packages = {LIBRARY, root.split(".")[0]}
    seen: set[str] = set()
    todo = [n for n in _with_parents(root)]
    while todo:
        name = todo.pop()
        if name in seen or name.split(".")[0] not in packages or module_file(name) is None:
            continue
        seen.add(name)
        todo.extend(module_dependencies(name) - seen)
    return tuple(sorted(seen))


def _relative(path: Path, name: str) -> str:
    """`path` relative to the folder holding `name`'s top-level package (posix separators)."""
    depth = len(name.split(".")) - (0 if path.name == "__init__.py" else 1)
    base = path.parent
    for _ in range(depth):
        base = base.parent
    return path.relative_to(base).as_posix()


@cache
def closure_files(root: str) -> dict[str, str]:
    """{relative path: sha256 prefix of its bytes} for every file of `root`'s import closure."""
    out = {}
    for name in import_closure(root):
        path = module_file(name)
        out[_relative(path, name)] = hashlib.sha256(path.read_bytes()).hexdigest()[:16]
    return dict(sorted(out.items()))


def version_of(files: dict[str, str]) -> str:
    """One hash for a set of file hashes (the stage's code version)."""
    h = hashlib.sha256()
    for rel, digest in sorted(files.items()):
        h.update(f"{rel}\0{digest}\n".encode())
    return h.hexdigest()[:16]



def stage_code_files(kind: str) -> dict[str, str]:
    """{path relative to its package's folder: sha256 prefix} of every project file the stage of `kind` can
    execute: the import closure of its module within `ringctl` and the module's own package (computed from the
    sources, without importing them, once per process)."""
    from ringctl.recipe.registry import stage_module_name

    return dict(closure_files(stage_module_name(kind)))


def stage_code_version(kind: str) -> str:
    """One hash of `stage_code_files(kind)`: any change to a file the stage can execute makes the stage rerun."""
    return version_of(stage_code_files(kind))
