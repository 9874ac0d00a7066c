"""`core` is pure logic: stdlib and `core` imports only, no threads, no I/O, no clock reads."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

CORE = Path(__file__).resolve().parent.parent / "core"
FORBIDDEN_MODULES = {"threading", "socket", "subprocess", "asyncio", "os", "time", "random", "uuid",
                     "sqlite3", "urllib", "http", "logging", "multiprocessing", "queue"}
FORBIDDEN_CALLS = {("datetime", "now"), ("datetime", "utcnow"), ("datetime", "today"), ("date", "today")}


def _modules() -> list[Path]:
    return sorted(p for p in CORE.glob("*.py"))


@pytest.mark.parametrize("path", _modules(), ids=lambda p: p.name)
def test_core_module_imports_only_the_stdlib_and_the_core(path: Path) -> None:
    tree = ast.parse(path.read_text())
    for node in ast.walk(tree):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module]
        for name in names:
            top = name.split(".")[0]
            if name.startswith("core") or top == "__future__":
                continue
            assert top in sys.stdlib_module_names, f"{path.name} imports {name}"
            assert top not in FORBIDDEN_MODULES, f"{path.name} imports {name}: not pure"


@pytest.mark.parametrize("path", _modules(), ids=lambda p: p.name)
def test_core_module_never_reads_the_clock(path: Path) -> None:
    tree = ast.parse(path.read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
            owner = node.func.value
            if isinstance(owner, ast.Name) and (owner.id, node.func.attr) in FORBIDDEN_CALLS:
                raise AssertionError(f"{path.name}:{node.lineno} reads the clock ({owner.id}.{node.func.attr})")
