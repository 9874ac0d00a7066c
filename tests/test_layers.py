"""The layer rule, checked from the code's own imports (README, "How it is built").

Every import counts: top-level, inside functions, and under `if TYPE_CHECKING:`.
- A module imports only its own layer or the layers below it; across packages of one layer only where
  the rule says so (the adapters may use each other; a subtree may use another subtree's `messages`).
- No import cycle between modules.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

# Lowest first. A module belongs to the most specific prefix that names it.
LAYERS: list[tuple[str, ...]] = [
    ("core",),
    ("config", "telemetry"),
    ("supervision", "storage", "review"),
    ("actors", "actors.clock", "actors.brokers", "actors.dhan", "actors.sources", "actors.wiring",
     "actors.instruments"),
    ("actors.market_data", "actors.trading", "actors.signals", "actors.alerts"),
    ("httpapi",),
    ("daemon",),
]
PACKAGES = ("core", "config", "telemetry", "supervision", "storage", "review", "actors", "httpapi", "daemon")
# Packages of one layer that may import each other (a subtree meets another only through its protocol).
SIBLINGS_ALLOWED = {"actors.clock", "actors.brokers", "actors.dhan", "actors.sources", "actors.wiring",
                    "actors.instruments"}
SUBTREES = ("actors.market_data", "actors.trading", "actors.signals", "actors.alerts")


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _modules() -> dict[str, Path]:
    found: dict[str, Path] = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            found[_module_name(path)] = path
    return found


MODULES = _modules()


def _imports(name: str, path: Path) -> Iterator[tuple[str, int]]:
    """(imported project module, line) for every import in the module, wherever it stands."""
    is_package = path.name == "__init__.py"
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        targets: list[str] = []
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = name.split(".") if is_package else name.split(".")[:-1]
                anchor = anchor[:len(anchor) - (node.level - 1)]
                base = ".".join([*anchor, base] if base else anchor)
            targets = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in MODULES else base for alias in node.names]
        for target in targets:
            while target and target not in MODULES:
                target = target.rpartition(".")[0]
            if target and target != name:
                yield target, node.lineno


def _layer(module: str) -> tuple[int, str]:
    best: tuple[int, str] | None = None
    for index, group in enumerate(LAYERS):
        for prefix in group:
            if (module == prefix or module.startswith(prefix + ".")) and (best is None or len(prefix) > len(best[1])):
                best = (index, prefix)
    if best is None:
        raise AssertionError(f"{module} is in no layer: add its package to LAYERS")
    return best


GRAPH = {name: sorted(set(_imports(name, path))) for name, path in MODULES.items()}


@pytest.mark.parametrize("module", sorted(MODULES))
def test_no_module_imports_a_layer_above_its_own(module: str) -> None:
    layer, package = _layer(module)
    for target, line in GRAPH[module]:
        target_layer, target_package = _layer(target)
        where = f"{MODULES[module].relative_to(ROOT)}:{line} imports {target}"
        assert target_layer <= layer, f"{where}: an upward import"
        if target_layer == layer and target_package != package:
            allowed = (package in SIBLINGS_ALLOWED and target_package in SIBLINGS_ALLOWED) or (
                package in SUBTREES and target == f"{target_package}.messages")
            assert allowed, f"{where}: {package} may not reach into {target_package}"


def test_there_is_no_import_cycle_between_modules() -> None:
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []
    counter = [0]

    def visit(node: str) -> None:  # Tarjan's strongly connected components
        index[node] = low[node] = counter[0]
        counter[0] += 1
        stack.append(node)
        on_stack.add(node)
        for target, _ in GRAPH[node]:
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
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

    for module in sorted(GRAPH):
        if module not in index:
            visit(module)
    assert not cycles, f"import cycles: {cycles}"


def test_the_checker_sees_imports_inside_functions_and_type_checking_blocks(tmp_path: Path) -> None:
    """The checker itself: a function-level import is an edge; so is one under TYPE_CHECKING."""
    assert any(target == "daemon.replay" for target, _ in GRAPH["daemon.cli"])  # inside _cmd_replay
    probe = tmp_path / "probe.py"
    probe.write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from daemon.runtime import Runtime\n"
                     "def f():\n    from storage.sql import Dialect\n")
    assert {target for target, _ in _imports("core.probe", probe)} == {"daemon.runtime", "storage.sql"}
