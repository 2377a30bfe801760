"""The layer rule on the real import graph: a folder never imports from a folder above it.

Layers, low to high: the shared leaves (``pipeline/*.py``) < ``data`` < ``models`` < ``eval`` <
``cache`` < ``train`` < ``retrieval`` < ``stages``. Every import counts, including imports inside
functions (hiding an upward import in a function body is exactly what this test must catch).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LAYERS = ["leaf", "data", "models", "eval", "cache", "train", "retrieval", "stages"]


def layer_of(module: str) -> str:
    """Layer of a dotted module name inside the project."""
    parts = module.split(".")
    if parts[0] == "stages":
        return "stages"
    if len(parts) >= 2 and parts[1] in LAYERS:
        return parts[1]
    return "leaf"


def module_name(path: Path, root: Path = ROOT) -> str:
    rel = path.relative_to(root).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def project_imports(path: Path, root: Path = ROOT) -> list[tuple[int, str]]:
    """(line, imported module) for every project import in a file, at any nesting depth."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    package = module_name(path, root).split(".")
    if path.name != "__init__.py":
        package = package[:-1]
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - (node.level - 1)]
                name = ".".join(base + ([node.module] if node.module else []))
            else:
                name = node.module or ""
            found.append((node.lineno, name))
            # ``from pipeline import data`` imports the sub-package ``pipeline.data``
            found += [(node.lineno, f"{name}.{alias.name}") for alias in node.names
                      if name in ("pipeline", "stages")]
    return [(line, name) for line, name in found if name.split(".")[0] in ("pipeline", "stages")]


def violations(root: Path = ROOT) -> list[str]:
    """Every import of a higher layer, as ``file:line: A imports B``."""
    out = []
    files = sorted((root / "pipeline").rglob("*.py")) + sorted((root / "stages").glob("*.py"))
    for path in files:
        own = LAYERS.index(layer_of(module_name(path, root)))
        for line, name in project_imports(path, root):
            if name in ("pipeline", "stages"):
                continue
            if LAYERS.index(layer_of(name)) > own:
                out.append(f"{path.relative_to(root)}:{line}: {layer_of(module_name(path, root))} "
                           f"imports {name} ({layer_of(name)})")
    return out


def test_no_folder_imports_a_higher_folder() -> None:
    assert violations() == []


def test_every_pipeline_folder_has_a_layer() -> None:
    folders = {p.name for p in (ROOT / "pipeline").iterdir()
               if p.is_dir() and (p / "__init__.py").exists()}
    assert folders <= set(LAYERS), f"folder(s) without a layer: {sorted(folders - set(LAYERS))}"


def test_no_import_cycle_between_modules() -> None:
    """Module-level cycles (e.g. clip <-> convert) make import order matter; none allowed."""
    files = sorted((ROOT / "pipeline").rglob("*.py"))
    names = {module_name(p) for p in files}
    graph = {module_name(p): {n for _, n in project_imports(p) if n in names} for p in files}
    state: dict[str, int] = {}
    cycle: list[str] = []

    def visit(node: str, stack: list[str]) -> bool:
        state[node] = 1
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                cycle.extend(stack[stack.index(nxt):] + [node, nxt] if nxt in stack
                             else [node, nxt])
                return True
            if state.get(nxt) is None and visit(nxt, stack + [node]):
                return True
        state[node] = 2
        return False

    for start in sorted(graph):
        if state.get(start) is None and visit(start, []):
            break
    assert not cycle, " -> ".join(cycle)


@pytest.mark.parametrize("inside_function", [False, True])
def test_the_check_catches_an_upward_import(tmp_path: Path, inside_function: bool) -> None:
    """Planted violation in a copy of the layout: a data module importing from train."""
    (tmp_path / "pipeline" / "data").mkdir(parents=True)
    (tmp_path / "pipeline" / "train").mkdir()
    (tmp_path / "stages").mkdir()
    for folder in ("pipeline", "pipeline/data", "pipeline/train"):
        (tmp_path / folder / "__init__.py").write_text("")
    (tmp_path / "pipeline" / "train" / "loop.py").write_text("X = 1\n")
    body = ("def f():\n    from pipeline.train.loop import X\n    return X\n" if inside_function
            else "from pipeline.train.loop import X\n")
    (tmp_path / "pipeline" / "data" / "bad.py").write_text(body)
    (tmp_path / "pipeline" / "train" / "ok.py").write_text("from pipeline.data import bad\n")
    found = violations(tmp_path)
    assert len(found) == 1 and found[0].startswith("pipeline/data/bad.py:")
    assert "imports pipeline.train.loop (train)" in found[0]
