"""The package layering of docs/design.md, checked on the source: a package imports only the
packages below it, no module imports a module that imports it back, and no import of callbridge's
own modules hides inside a function or behind ``TYPE_CHECKING``."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1] / "bridge"

#: Bottom to top, as docs/design.md lists them. "bridge" is the package itself (its version).
LAYERS = ("bridge", "common", "events", "calls", "redisconn", "config", "auth", "api", "brokers",
          "cluster", "consumer", "push", "upstream", "providers", "downstream", "core", "admin", "http", "simulator",
          "bench", "cli", "__main__")

#: The command line loads a command's modules only when that command runs, so that
#: ``callbridge --help`` and light commands start fast: the only imports allowed inside
#: functions.
DEFERRED_IMPORTS_ALLOWED = {"bridge.cli", "bridge.admin.cli"}


def _deferred_allowed(module: str) -> bool:
    return module in DEFERRED_IMPORTS_ALLOWED or module.startswith("bridge.cli.")


def _modules() -> dict[str, Path]:
    found = {}
    for path in ROOT.rglob("*.py"):
        parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        found[".".join(parts)] = path
    return found


MODULES = _modules()


def _target(name: str, imported: str | None) -> str | None:
    """The callbridge module an import names, if any."""
    if imported is not None and f"{name}.{imported}" in MODULES:
        return f"{name}.{imported}"
    return name if name in MODULES else None


def _imports(path: Path) -> list[tuple[str, int, bool]]:
    """(module, line, at module level) for each import of a callbridge module."""
    tree = ast.parse(path.read_text())
    top = {id(node) for node in tree.body}
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and not node.level:
            targets = [_target(node.module, alias.name) for alias in node.names]
        elif isinstance(node, ast.Import):
            targets = [_target(alias.name, None) for alias in node.names]
        else:
            continue
        for target in targets:
            if target is not None:
                found.append((target, node.lineno, id(node) in top))
    return found


GRAPH = {name: _imports(path) for name, path in MODULES.items()}


def _layer(module: str) -> int:
    parts = module.split(".")
    return LAYERS.index(parts[1] if len(parts) > 1 else "bridge")


def test_every_package_has_a_layer() -> None:
    packages = {name.split(".")[1] for name in MODULES if "." in name}
    missing = sorted(packages - set(LAYERS))
    assert not missing, f"add {missing} to LAYERS and to docs/design.md"


@pytest.mark.parametrize("module", sorted(MODULES))
def test_imports_point_down(module: str) -> None:
    upward = [f"line {line}: {target}" for target, line, _ in GRAPH[module]
              if _layer(target) > _layer(module)]
    assert not upward, f"{module} imports a higher package: {upward}"


@pytest.mark.parametrize("module", sorted(MODULES))
def test_imports_at_module_level(module: str) -> None:
    if _deferred_allowed(module):
        return
    deferred = [f"line {line}: {target}" for target, line, top in GRAPH[module] if not top]
    assert not deferred, f"{module} imports inside a function or a TYPE_CHECKING block: {deferred}"


def test_no_module_imports_one_that_imports_it_back() -> None:
    edges = {m: {t for t, _, _ in deps if t != m} for m, deps in GRAPH.items()}
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []

    def visit(node: str) -> None:  # Tarjan's strongly connected components
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in edges[node]:
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
                cycles.append(sorted(component))

    for module in sorted(edges):
        if module not in index:
            visit(module)
    assert not cycles, f"import cycles: {cycles}"
