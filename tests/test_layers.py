"""The package reads as layers: each folder imports only folders below it, and no module
imports itself back through others (no circles). The order is the README's Development
section; a new folder gets its place here."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "bootstrap"

#: lowest first; a folder may import itself and anything before it
LAYERS = (
    "system",
    "profiles",
    "install",
    "locks",
    "state",
    "jupyter",
    "envs",
    "doctor",
    "fleet",
    "run",
    "cli",
)


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(path: Path) -> set[str]:
    """Every bootstrap module this file imports, at the top or inside a function."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.startswith("bootstrap."))
        elif (
            isinstance(node, ast.ImportFrom)
            and node.level == 0
            and (node.module or "").split(".")[0] == "bootstrap"
        ):
            for alias in node.names:
                sub = f"{node.module}.{alias.name}"
                is_module = (PACKAGE.parent / sub.replace(".", "/")).with_suffix(".py").exists()
                found.add(sub if is_module else str(node.module))
    return found - {"bootstrap"}


def graph() -> dict[str, set[str]]:
    return {module_name(p): imports_of(p) for p in PACKAGE.rglob("*.py")}


def layer_of(module: str) -> int | None:
    parts = module.split(".")
    if len(parts) < 3 and parts[-1] not in LAYERS:
        return None  # bootstrap/__init__.py and __main__.py sit above every layer
    return LAYERS.index(parts[1])


def test_every_folder_has_a_layer() -> None:
    folders = {p.name for p in PACKAGE.iterdir() if p.is_dir() and p.name != "__pycache__"}
    assert folders == set(LAYERS)


def test_imports_point_down_only() -> None:
    upward = []
    for module, imported in sorted(graph().items()):
        mine = layer_of(module)
        if mine is None:
            continue
        for other in sorted(imported):
            theirs = layer_of(other)
            if theirs is not None and theirs > mine:
                upward.append(f"{module} -> {other}")
    assert upward == []


def test_no_import_circles() -> None:
    edges = graph()
    circles: set[tuple[str, ...]] = set()

    def visit(module: str, path: list[str]) -> None:
        for other in sorted(edges.get(module, ())):
            if other in path:
                cycle = path[path.index(other) :]
                start = cycle.index(min(cycle))
                circles.add(tuple(cycle[start:] + cycle[:start]))
            elif len(path) < 12:
                visit(other, [*path, other])

    for module in sorted(edges):
        visit(module, [module])
    assert sorted(circles) == []
