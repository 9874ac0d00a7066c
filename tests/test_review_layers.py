"""The review's place in the layers: it imports only the stdlib, orjson, `core` and `telemetry`; the CLI
and the control API sit above it; nothing below imports it."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
ALLOWED = {"core", "telemetry", "review", "orjson"}
BELOW = ["core", "config", "telemetry", "supervision", "storage", "actors"]


def _imports(path: Path) -> list[str]:
    names: list[str] = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.append(node.module)
    return names


@pytest.mark.parametrize("path", sorted((ROOT / "review").glob("*.py")), ids=lambda p: p.name)
def test_review_imports_only_core_telemetry_and_the_stdlib(path: Path) -> None:
    for name in _imports(path):
        top = name.split(".")[0]
        assert top in ALLOWED or top in sys.stdlib_module_names, f"review/{path.name} imports {name}"


def test_importing_review_loads_no_layer_above_core_and_telemetry() -> None:
    probe = ("import sys, review; print(sorted({m.split('.')[0] for m in sys.modules} & "
             "{'actors', 'storage', 'supervision', 'httpapi', 'daemon', 'config', 'pykka', 'falcon'}))")
    run = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert run.returncode == 0 and run.stdout.strip() == "[]", run.stderr


@pytest.mark.parametrize("package", BELOW)
def test_nothing_below_imports_review(package: str) -> None:
    for path in sorted((ROOT / package).rglob("*.py")):
        assert not [n for n in _imports(path) if n.split(".")[0] == "review"], f"{path} imports review"
