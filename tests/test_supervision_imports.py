"""The supervision library stands alone: it imports nothing of the application, and its own modules
import each other without a cycle. Every import counts, including TYPE_CHECKING blocks and imports
inside functions (a lazy import is still a dependency)."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "supervision"
# Beyond the standard library: Pykka, and the telemetry leaf the layer rule puts below supervision.
ALLOWED_OUTSIDE = {"pykka", "telemetry"}


def _module_name(path: Path) -> str:
    relative = path.relative_to(ROOT).with_suffix("")
    parts = list(relative.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _imports(path: Path) -> set[str]:
    """Every module `path` imports, anywhere in the file, as absolute dotted names."""
    tree = ast.parse(path.read_text(), filename=str(path))
    package = _module_name(path) if path.name == "__init__.py" else _module_name(path).rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                prefix = ".".join(base + ([node.module] if node.module else []))
            else:
                prefix = node.module or ""
            found.add(prefix)
            # `from supervision import actor` imports the submodule actor
            found.update(f"{prefix}.{alias.name}" for alias in node.names
                         if (PACKAGE.parent / Path(*f"{prefix}.{alias.name}".split("."))).with_suffix(".py").exists())
    return found


def _library_modules() -> dict[str, Path]:
    return {_module_name(path): path for path in sorted(PACKAGE.glob("*.py"))}


def test_supervision_imports_only_the_standard_library_pykka_and_telemetry() -> None:
    foreign = {
        (name, imported)
        for name, path in _library_modules().items()
        for imported in _imports(path)
        if imported.split(".")[0] not in sys.stdlib_module_names | ALLOWED_OUTSIDE | {"supervision"}
    }
    assert not foreign, f"supervision imports the application: {sorted(foreign)}"


def test_supervision_modules_import_each_other_without_a_cycle() -> None:
    modules = _library_modules()
    graph = {name: {imported for imported in _imports(path) if imported in modules and imported != name}
             for name, path in modules.items()}
    # Depth-first search: an edge back to a module still open on the path closes a cycle.
    state: dict[str, str] = {}
    cycles: list[list[str]] = []

    def visit(path: list[str]) -> None:
        node = path[-1]
        state[node] = "open"
        for target in sorted(graph[node]):
            if state.get(target) == "open":
                cycles.append(path[path.index(target):] + [target])
            elif target not in state:
                visit(path + [target])
        state[node] = "done"

    for name in sorted(graph):
        if name not in state:
            visit([name])
    assert not cycles, f"import cycles in supervision: {cycles}"


def test_every_supervision_module_declares_its_public_names() -> None:
    missing = []
    for name, path in _library_modules().items():
        tree = ast.parse(path.read_text())
        declared = any(isinstance(node, (ast.Assign, ast.AnnAssign))
                       and any(isinstance(t, ast.Name) and t.id == "__all__"
                               for t in (node.targets if isinstance(node, ast.Assign) else [node.target]))
                       for node in tree.body)
        if not declared:
            missing.append(name)
    assert not missing, f"modules without __all__: {missing}"
