"""The package's import structure: no import cycles, and every import points down the layers.

The import graph is read statically from the source (:mod:`ast`), so it is fast and sees
every ``import`` statement: at module level and inside functions (the lazy imports that
keep ``clotseg --help`` light), since a lazy import is a dependency all the same and a
cycle through one only shows when that function runs. ``if TYPE_CHECKING:`` imports are
left out (they never run). ``from package import name`` counts as an import of the
submodule when ``name`` is one, else of the package.

Run ``python tests/test_layers.py`` to print the graph between layer groups.
"""

from __future__ import annotations

import ast
import sys
from collections.abc import Iterator
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"
ROOT = "clotseg"

#: Layer groups, lowest first. A module may import modules of its own group or of lower
#: groups only. A module belongs to the group of its longest listed prefix.
#:
#: * ``errors``/``timing``/``devices``: no clotseg imports at all.
#: * ``io``, ``masks``, ``config``: files, CSV tables, volumes, mask geometry, settings.
#: * the domain: synthetic data, preprocessing, network input (``data``), networks,
#:   metrics and measurements; they share one group as peers that may use each other.
#: * ``runs`` and ``model_export``: the run-folder contract (``model.json``, checkpoints)
#:   between training and inference, and its shareable form (``model.zip``, ONNX) that
#:   inference opens; they build the network of a run, so they sit above ``models``.
#: * ``training`` and ``inference``, then ``report`` (reads what predict wrote), then the
#:   library entry points, then the command line.
LAYERS: list[set[str]] = [
    {"", "errors", "timing", "devices"},
    {"io", "masks", "config", "configs"},
    {"synth", "preprocess", "data", "models", "metrics", "measure"},
    {"runs", "model_export"},
    {"training", "inference"},
    {"report"},
    {"api", "validate"},
    {"commands", "cli", "demo"},
]

#: Imports that are not dependencies. The package itself (group ``""``) holds
#: ``__version__``, which modules of every layer read, so it sits in the lowest layer; its
#: ``clotseg.segment`` is a pass-through to :func:`clotseg.api.segment` that imports the
#: API only when called, so that ``import clotseg`` stays light.
FACADE_EDGES: set[tuple[str, str]] = {("clotseg", "clotseg.api")}

#: Imports that break the layers or close a cycle and are accepted for now: none are left.
#: The set may only shrink: the test fails when one of these no longer occurs, so that it
#: is deleted here, and when any import outside it points up the layers or closes a cycle.
#: Entries are (importing module, imported module).
KNOWN_VIOLATIONS: set[tuple[str, str]] = set()


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def modules() -> dict[str, Path]:
    """``dotted name -> file`` of every module of the package (packages by their
    ``__init__``)."""
    return {_module_name(p): p for p in sorted((SRC / ROOT).rglob("*.py"))}


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _import_nodes(tree: ast.AST) -> Iterator[ast.Import | ast.ImportFrom]:
    """Every import statement, at any depth, except those under ``if TYPE_CHECKING:``."""
    stack = [tree]
    while stack:
        node = stack.pop()
        if isinstance(node, ast.If) and _is_type_checking(node):
            stack.extend(node.orelse)
            continue
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            yield node
        stack.extend(ast.iter_child_nodes(node))


def _owner(name: str, known: dict[str, Path]) -> str | None:
    """The longest known module that ``name`` is or lies in; None outside the package."""
    while name:
        if name in known:
            return name
        name = name.rpartition(".")[0]
    return None


def _targets(node: ast.Import | ast.ImportFrom, here: str, is_pkg: bool,
             known: dict[str, Path]) -> Iterator[str]:
    if isinstance(node, ast.Import):
        for alias in node.names:
            yield from filter(None, [_owner(alias.name, known)])
        return
    base = node.module or ""
    if node.level:  # relative: from the package of ``here``
        package = here if is_pkg else here.rpartition(".")[0]
        for _ in range(node.level - 1):
            package = package.rpartition(".")[0]
        base = f"{package}.{base}" if base else package
    for alias in node.names:
        target = _owner(f"{base}.{alias.name}", known) if alias.name != "*" else None
        target = target if target and target != _owner(base, known) else _owner(base, known)
        if target:
            yield target


def import_graph() -> dict[str, set[str]]:
    """``module -> clotseg modules it imports`` (module- and function-level)."""
    known = modules()
    graph: dict[str, set[str]] = {}
    for name, path in known.items():
        tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
        is_pkg = path.name == "__init__.py"
        graph[name] = {t for node in _import_nodes(tree)
                       for t in _targets(node, name, is_pkg, known)
                       if t != name and (name, t) not in FACADE_EDGES}
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan), sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                found.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return sorted(found)


def cycle_edges(graph: dict[str, set[str]]) -> set[tuple[str, str]]:
    """The imports that lie inside an import cycle."""
    return {(a, b) for comp in cycles(graph) for a in comp for b in graph[a] if b in comp}


def group_of(module: str) -> str:
    """The top-level part of ``clotseg.x.y`` (``x``; ``""`` for the package itself)."""
    return module.split(".")[1] if "." in module else ""


def layer_of(module: str) -> int:
    group = group_of(module)
    for level, groups in enumerate(LAYERS):
        if group in groups:
            return level
    raise AssertionError(f"{module}: group {group!r} is in no layer of LAYERS; add it")


def upward_edges(graph: dict[str, set[str]]) -> set[tuple[str, str]]:
    """Imports of a module from a higher layer group."""
    return {(a, b) for a, targets in graph.items() for b in targets
            if layer_of(b) > layer_of(a)}


def violations(graph: dict[str, set[str]]) -> set[tuple[str, str]]:
    return upward_edges(graph) | cycle_edges(graph)


def group_graph(graph: dict[str, set[str]]) -> dict[str, set[str]]:
    """Imports between top-level groups (``data -> io``), a group's own ones left out."""
    out: dict[str, set[str]] = {}
    for a, targets in graph.items():
        out.setdefault(group_of(a) or ROOT, set()).update(
            group_of(b) or ROOT for b in targets if group_of(b) != group_of(a))
    return out


# ----------------------------------------------------------------------------- tests


def test_every_group_has_a_layer():
    for module in modules():
        layer_of(module)


def test_no_new_import_cycle():
    graph = import_graph()
    new = sorted(cycle_edges(graph) - KNOWN_VIOLATIONS)
    assert not new, f"imports closing a cycle: {new}; cycles: {cycles(graph)}"


def test_imports_point_down_the_layers():
    new = sorted(upward_edges(import_graph()) - KNOWN_VIOLATIONS)
    assert not new, ("imports of a higher layer group (see LAYERS in tests/test_layers.py): "
                     f"{new}")


def test_known_violations_only_shrink():
    gone = sorted(KNOWN_VIOLATIONS - violations(import_graph()))
    assert not gone, f"fixed, delete from KNOWN_VIOLATIONS: {gone}"


def test_graph_reads_lazy_and_relative_imports():
    known = {"clotseg.a": Path("a.py"), "clotseg.a.b": Path("a/b.py"), "clotseg.c": Path("c.py")}
    tree = ast.parse("def f():\n    from clotseg.a import b, x\n    from . import c\n"
                     "if TYPE_CHECKING:\n    import clotseg.c\n")
    found = {t for node in _import_nodes(tree) for t in _targets(node, "clotseg.z", False, known)}
    assert found == {"clotseg.a.b", "clotseg.a", "clotseg.c"}
    assert cycles({"x": {"y"}, "y": {"x"}, "z": {"x"}}) == [["x", "y"]]


def main() -> None:
    graph = import_graph()
    for group, targets in sorted(group_graph(graph).items(), key=lambda kv: kv[0]):
        print(f"{group:>13} -> {', '.join(sorted(targets)) or '-'}")
    print("cycles:", cycles(graph) or "none")
    for a, b in sorted(violations(graph)):
        mark = "known" if (a, b) in KNOWN_VIOLATIONS else "NEW"
        print(f"  {mark:5} {a} -> {b}")


if __name__ == "__main__":
    sys.exit(main())
