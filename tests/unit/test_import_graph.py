"""No import circles: every ``import`` of the runtime and tool packages, module-level,
in functions (first-use imports) and under TYPE_CHECKING alike, read from the source with ast;
the graph must be acyclic, and the runtime must never import the tools."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SOURCES = {"heap_forwarder": ROOT / "handler", "heap_forwarder_tools": ROOT / "tools"}


def _modules() -> dict[str, Path]:
    found: dict[str, Path] = {}
    for package, root in SOURCES.items():
        for path in (root / package).rglob("*.py"):
            parts = path.relative_to(root).with_suffix("").parts
            name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
            found[name] = path
    return found


def _imports(name: str, path: Path, known: set[str]) -> set[str]:
    """The modules of ours that ``name`` imports (``from a import b``: ``a.b`` if it is a module)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    targets: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text("utf-8"))):
        if isinstance(node, ast.Import):
            targets.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                base = f"{anchor}.{base}" if base else anchor
            for alias in node.names:
                sub = f"{base}.{alias.name}"
                targets.add(sub if sub in known else base)
    # A package's own __init__ (imported on the way) is no dependency worth a cycle.
    return {t for t in targets if t in known and not name.startswith(t + ".")} - {name}


def _graph() -> dict[str, set[str]]:
    modules = _modules()
    return {name: _imports(name, path, set(modules)) for name, path in modules.items()}


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return [*path[path.index(nxt) :], nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        path.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (found := visit(node)):
            return found
    return None


def test_the_graph_is_read_from_every_module() -> None:
    graph = _graph()
    assert "heap_forwarder.pipeline" in graph and "heap_forwarder_tools.cli" in graph
    assert "heap_forwarder.inbound" in graph["heap_forwarder.models"]  # a real edge is seen
    assert "heap_forwarder.models" in graph["heap_forwarder.pipeline"]  # first-use imports too


def test_there_is_no_import_circle() -> None:
    assert _cycle(_graph()) is None, " -> ".join(_cycle(_graph()) or [])


def test_a_circle_would_be_found() -> None:
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]


def test_the_runtime_never_imports_the_tools() -> None:
    for name, targets in _graph().items():
        if name.startswith("heap_forwarder."):
            assert not [t for t in targets if t.startswith("heap_forwarder_tools")], name
