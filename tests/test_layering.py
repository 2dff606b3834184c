"""No import cycle among the ``snailjob`` modules.

Every import statement of the package counts: at module level, under
``if TYPE_CHECKING:`` and inside functions (the imports that load a feature
on first use), so a cycle cannot hide behind a type annotation or a lazy
import.  ``from snailjob.x import name`` is an edge to ``snailjob.x`` (or to
``snailjob.x.name`` when that is a module); the implicit import of a
package's ``__init__`` by its submodules is not an edge.  A module named in
a string counts too (a ``sys.modules`` lookup, a table of lazily imported
names), except logger names and the module's own packages (an app label).

``python tests/test_layering.py`` prints the cycles found.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path
from typing import Dict, FrozenSet, List, Set, Tuple

PACKAGE = Path(__file__).resolve().parents[1] / "snailjob"

# Imports that close a cycle today, outside the retry modules, each with why
# it is still there.  The test fails when a cycle appears that these do not
# explain, and when an entry no longer closes one (then remove it).
KNOWN_CYCLES: FrozenSet[Tuple[str, str]] = frozenset()


def module_names(root: Path = PACKAGE) -> Dict[str, Path]:
    """``snailjob.x.y`` -> its file, for every module of the package."""
    names = {}
    for path in sorted(root.rglob("*.py")):
        parts = list(path.relative_to(root.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        names[".".join(parts)] = path
    return names


def imports_of(name: str, path: Path, modules: Set[str]) -> Set[str]:
    """The package modules that ``name`` (in ``path``) imports anywhere."""
    is_package = path.name == "__init__.py"
    found: Set[str] = set()
    loggers: Set[int] = set()  # the names given to getLogger: not modules
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = name.split(".")
                anchor = anchor[: len(anchor) - node.level + (1 if is_package else 0)]
                base = ".".join(anchor + ([base] if base else []))
            targets = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base
                       for alias in node.names]
        elif isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in loggers:
            own = node.value == name or name.startswith(node.value + ".")
            targets = [node.value] if node.value in modules and not own else []
        else:
            if isinstance(node, ast.Call) and getattr(node.func, "attr", getattr(node.func, "id", "")) == "getLogger":
                loggers.update(id(arg) for arg in node.args)
            continue
        for target in targets:
            while target and target not in modules:  # import snailjob.x.y loads snailjob.x.y
                target = target.rpartition(".")[0]
            if target and target != name:
                found.add(target)
    return found


def import_graph(root: Path = PACKAGE) -> Dict[str, Set[str]]:
    names = module_names(root)
    return {name: imports_of(name, path, set(names)) for name, path in names.items()}


def cycles(graph: Dict[str, Set[str]]) -> List[List[str]]:
    """The strongly connected components of more than one module (Tarjan),
    each sorted; the list sorted."""
    index: Dict[str, int] = {}
    low: Dict[str, int] = {}
    stack: List[str] = []
    on_stack: Set[str] = set()
    found: List[List[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(graph.get(node, ())):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                item = stack.pop()
                on_stack.discard(item)
                component.append(item)
                if item == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return sorted(found)


def cycle_edges(graph: Dict[str, Set[str]]) -> Set[Tuple[str, str]]:
    """The imports that lie on a cycle (both ends in one component)."""
    edges = set()
    for component in cycles(graph):
        members = set(component)
        edges |= {(a, b) for a in component for b in graph[a] if b in members}
    return edges


def without(graph: Dict[str, Set[str]], edges: FrozenSet[Tuple[str, str]]) -> Dict[str, Set[str]]:
    return {a: {b for b in targets if (a, b) not in edges} for a, targets in graph.items()}


def test_the_walker_sees_every_kind_of_import(tmp_path):
    pkg = tmp_path / "snailjob"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("from snailjob.a import A\n")
    (pkg / "a.py").write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from snailjob.b import B\n")
    (pkg / "b.py").write_text("def f():\n    import snailjob.sub.c\n")
    (pkg / "sub" / "__init__.py").write_text("from . import c\n")
    (pkg / "sub" / "c.py").write_text("from ..a import A\nfrom snailjob import a\n")
    (pkg / "d.py").write_text('import logging, sys\nlogging.getLogger("snailjob.a")\nsys.modules.get("snailjob.b")\n')
    graph = import_graph(pkg)
    assert graph == {"snailjob": {"snailjob.a"}, "snailjob.a": {"snailjob.b"}, "snailjob.b": {"snailjob.sub.c"},
                     "snailjob.sub": {"snailjob.sub.c"}, "snailjob.sub.c": {"snailjob.a"},
                     "snailjob.d": {"snailjob.b"}}
    assert cycles(graph) == [["snailjob.a", "snailjob.b", "snailjob.sub.c"]]


def test_the_retry_modules_import_downwards_only():
    graph = import_graph()
    assert not any(m.startswith("snailjob.retry") for m in graph["snailjob.retry_registry"]), \
        graph["snailjob.retry_registry"]
    retry_modules = {m for m in graph if m.startswith("snailjob.retry")}
    assert len(retry_modules) >= 4, retry_modules
    on_cycles = {m for component in cycles(graph) for m in component}
    assert not retry_modules & on_cycles, sorted(retry_modules & on_cycles)


def test_no_import_cycle_but_the_known_ones():
    graph = import_graph()
    assert cycles(without(graph, KNOWN_CYCLES)) == [], "a new import cycle"
    stale = sorted(KNOWN_CYCLES - cycle_edges(graph))
    assert stale == [], f"these no longer close a cycle: remove them from KNOWN_CYCLES: {stale}"


if __name__ == "__main__":
    graph = import_graph()
    for component in cycles(graph):
        print(" ".join(component))
        for a, b in sorted(e for e in cycle_edges(graph) if e[0] in component):
            print(f"    {a} -> {b}")
    sys.exit(1 if cycles(without(graph, KNOWN_CYCLES)) else 0)


# The surfaces above the client (docs/architecture.md): they use its public
# API; nothing under them imports them, nor the client, nor the package's
# public __init__.
SURFACES = ("snailjob.cli", "snailjob.contrib", "snailjob.ops", "snailjob.compat", "snailjob.__main__")
# Packages beside the job client, and what each may import from outside itself.
BESIDE = {
    "snailjob.wire": (),
    "snailjob.testing": ("snailjob.wire",),
    "snailjob.openapi": ("snailjob._version", "snailjob.errors", "snailjob.settings", "snailjob.wire.codec",
                         "snailjob.wire.enums"),
    "snailjob.delivery": ("snailjob.errors", "snailjob.transport", "snailjob.wire"),
}


def _within(name: str, prefix: str) -> bool:
    return name == prefix or name.startswith(prefix + ".")


def upward_imports(graph: Dict[str, Set[str]]) -> List[str]:
    """Imports that run against the layering above, as ``a -> b`` lines."""
    wrong = []
    for name, targets in sorted(graph.items()):
        surface = name == "snailjob" or any(_within(name, s) for s in SURFACES)
        for target in sorted(targets):
            if not surface and (target in ("snailjob", "snailjob.client")
                                or any(_within(target, s) for s in SURFACES)):
                wrong.append(f"{name} -> {target}")
            for package, allowed in BESIDE.items():
                if (_within(name, package) and not _within(target, package)
                        and not any(_within(target, a) for a in allowed)):
                    wrong.append(f"{name} -> {target} (outside what {package} may import)")
    return wrong


def test_no_import_runs_back_up():
    assert upward_imports(import_graph()) == []


def test_the_layer_check_sees_an_upward_import(tmp_path):
    pkg = tmp_path / "snailjob"
    (pkg / "wire").mkdir(parents=True)
    (pkg / "__init__.py").write_text("from snailjob.client import Client\n")
    (pkg / "client.py").write_text("from snailjob.dispatcher import D\n")
    (pkg / "dispatcher.py").write_text("def f():\n    from snailjob.client import Client\n")
    (pkg / "wire" / "__init__.py").write_text("")
    (pkg / "wire" / "codec.py").write_text("from snailjob import errors\n")
    (pkg / "errors.py").write_text("")
    assert upward_imports(import_graph(pkg)) == [
        "snailjob.dispatcher -> snailjob.client",
        "snailjob.wire.codec -> snailjob.errors (outside what snailjob.wire may import)"]
