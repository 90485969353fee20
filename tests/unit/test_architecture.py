"""Dependencies point one way: the import graph of `src/myhug` between subpackages and top-level modules
has no cycle. Every import counts, including those under TYPE_CHECKING and inside functions; the
migrations (frozen history) are aside."""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

SRC = Path(__file__).resolve().parents[2] / "src"
PACKAGE = SRC / "myhug"


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _unit(module: str) -> str:
    """The node of the graph: `myhug.<subpackage>` or `myhug.<top-level module>`."""
    parts = module.split(".")
    return ".".join(parts[:2])


def _is_module(name: str) -> bool:
    relative = Path(*name.split("."))
    return (SRC / relative).with_suffix(".py").exists() or (SRC / relative / "__init__.py").exists()


def _imports(path: Path) -> set[str]:
    module = _module_name(path)
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join([*anchor, *([node.module] if node.module else [])])
            found.add(base)
            # `from myhug import schema` imports the module myhug.schema, not the package.
            found.update(f"{base}.{alias.name}" for alias in node.names if _is_module(f"{base}.{alias.name}"))
    return {name for name in found if name.startswith("myhug.")}


def import_graph() -> dict[str, set[str]]:
    graph: dict[str, set[str]] = defaultdict(set)
    for path in PACKAGE.rglob("*.py"):
        if "migrations" in path.relative_to(PACKAGE).parts:
            continue
        source = _unit(_module_name(path))
        for target in map(_unit, _imports(path)):
            if target != source and target != "myhug":
                graph[source].add(target)
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One cycle per strongly connected component with more than one node (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

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
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_the_graph_finder_sees_imports_of_every_kind(tmp_path: Path) -> None:
    graph = import_graph()
    assert "myhug.gateway" in graph["myhug.supervisor"]  # a plain import
    assert "myhug.schema" in graph["myhug.datadir"]  # `from myhug import schema`
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_no_cycle_between_subpackages_or_top_level_modules() -> None:
    cycles = _cycles(import_graph())
    assert cycles == [], "import cycles: " + "; ".join(" <-> ".join(c) for c in cycles)



# The layers of docs/architecture.md, top to bottom: a unit imports units of its own layer or below, never
# above. A new subpackage or top-level module must be placed here, or this test fails.
LAYERS: dict[str, tuple[str, ...]] = {
    "composition": ("cli", "demo", "supervisor", "components", "web", "workerpool", "datadir", "schema", "metrics",
                    "dpi_client"),
    "edges": ("gateway", "api", "webmail", "staffdesk"),
    "routes": ("hin", "mailbox"),
    "delivery": ("delivery",),
    "registry": ("directory",),
    "leaves": ("audit", "blobs", "crypto", "mail", "websecurity", "xdm"),
    "foundation": ("config", "db", "errors", "background", "instruments", "data"),
}
RANK = {f"myhug.{unit}": rank for rank, units in enumerate(reversed(LAYERS.values())) for unit in units}
MAX_LINES = 500
WHY_LONGER = "Over 500 lines"


def _upward_imports(graph: dict[str, set[str]]) -> list[str]:
    return sorted(f"{source} -> {target}" for source, targets in graph.items() for target in targets
                  if RANK[target] > RANK[source])


def test_every_unit_has_a_layer() -> None:
    units = {_unit(_module_name(p)) for p in PACKAGE.rglob("*.py")
             if "migrations" not in p.relative_to(PACKAGE).parts} - {"myhug"}
    assert units - set(RANK) == set(), "place these in LAYERS (and in the picture of docs/architecture.md)"


def test_nothing_imports_a_layer_above_its_own() -> None:
    assert _upward_imports(import_graph()) == []
    # The check sees a violation when there is one: the delivery core importing the SMTP edge.
    assert _upward_imports({"myhug.delivery": {"myhug.gateway"}}) == ["myhug.delivery -> myhug.gateway"]


def test_the_delivery_core_imports_no_route_and_no_edge() -> None:
    outside = {f"myhug.{unit}" for unit in (*LAYERS["routes"], *LAYERS["edges"], *LAYERS["composition"])}
    assert import_graph()["myhug.delivery"] & outside == set()


def test_no_module_is_over_500_lines_unless_its_docstring_says_why() -> None:
    long = []
    for path in PACKAGE.rglob("*.py"):
        if "migrations" in path.relative_to(PACKAGE).parts:
            continue
        text = path.read_text()
        if len(text.splitlines()) > MAX_LINES and WHY_LONGER not in (ast.get_docstring(ast.parse(text)) or ""):
            long.append(f"{path.relative_to(SRC)}: {len(text.splitlines())} lines")
    assert long == []


def test_no_package_holds_more_than_a_fifth_of_the_code() -> None:
    lines: dict[str, int] = defaultdict(int)
    for path in PACKAGE.rglob("*.py"):
        if "migrations" not in path.relative_to(PACKAGE).parts:
            lines[_unit(_module_name(path))] += len(path.read_text().splitlines())
    total = sum(lines.values())
    assert {unit: n for unit, n in lines.items() if n > total / 5} == {}
