"""The import graph of proxydhcp/: no module imports itself back through others (a cycle makes the
layering a matter of import order), and the TFTP package stays usable alone.

Every `import` and `from ... import` in the source counts, inside functions and `if TYPE_CHECKING:`
blocks too: a lazy import is still a dependency.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[2] / "proxydhcp"


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _graph() -> dict[str, set[str]]:
    files = {_module_name(p): p for p in PACKAGE.rglob("*.py")}
    graph: dict[str, set[str]] = {name: set() for name in files}
    for name, path in files.items():
        is_package = path.name == "__init__.py"
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:  # relative: from the module's package
                    package = name.split(".")
                    package = package if is_package else package[:-1]
                    package = package[: len(package) - node.level + 1]
                    base = ".".join([*package, base] if base else package)
                # `from package import module` names a module; `from module import name` the module.
                named = [f"{base}.{alias.name}" for alias in node.names]
                targets = [each if each in files else base for each in named]
            for target in targets:
                while target and target not in files:  # `import a.b.c` of a name inside a module
                    target = target.rpartition(".")[0]
                if target and target != name:
                    graph[name].add(target)
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
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
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_the_graph_is_read() -> None:
    graph = _graph()
    assert "proxydhcp.dhcp.codes" in graph["proxydhcp.dhcp.packet"]
    assert "proxydhcp.pxe.pipeline" in graph["proxydhcp.serve.service"]


def test_no_import_cycles() -> None:
    assert _cycles(_graph()) == []


def test_a_cycle_is_found() -> None:
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_the_tftp_package_stands_alone() -> None:
    """TFTP imports only its own modules, the package-wide errors and outcomes, the event-loop choice
    its standalone command runs on and the log-safe rendering of client text (`untrusted`, shared
    with HTTP); the last two are leaves on the standard library."""
    allowed = (
        "proxydhcp.tftp",
        "proxydhcp.errors",
        "proxydhcp.outcome",
        "proxydhcp.eventloop",
        "proxydhcp.untrusted",
    )
    for name, targets in _graph().items():
        if name.startswith("proxydhcp.tftp"):
            outside = {t for t in targets if not t.startswith(allowed)}
            assert not outside, f"{name} imports {sorted(outside)}"


def test_the_shared_leaves_import_nothing_of_the_package() -> None:
    """What TFTP may import besides itself stays a leaf (errors on outcome only), so that the
    package's standing alone is not undone one step away."""
    graph = _graph()
    assert graph["proxydhcp.untrusted"] == set()
    assert graph["proxydhcp.eventloop"] == set()
    assert graph["proxydhcp.outcome"] == set()
    assert graph["proxydhcp.errors"] == {"proxydhcp.outcome"}
