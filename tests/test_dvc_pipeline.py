"""The real dvc.yaml: every stage depends on all the code its command runs, and no more.

For each stage, the command line(s) are resolved to the click command they run; the import
closure of that command's module (every project import, at any depth, including the parent
packages' ``__init__``) must be covered by the stage's deps (a file, or a folder above it).
Otherwise a lab that edits, say, CLIP encoding keeps a stale shared cache while ``dvc status``
says everything is up to date.
"""

from __future__ import annotations

import re
import shlex
import sys
from pathlib import Path

import click
import pytest
import yaml

from stages.cli import main

sys.path.insert(0, str(Path(__file__).parent))
from test_layers import module_name, project_imports  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
DVC = yaml.safe_load((ROOT / "dvc.yaml").read_text(encoding="utf-8"))
PARAMS = yaml.safe_load((ROOT / "params.yaml").read_text(encoding="utf-8"))
FILES = {module_name(p): p for p in [*ROOT.glob("pipeline/**/*.py"), *ROOT.glob("stages/*.py")]}


def _resolve(name: str) -> str | None:
    while name and name not in FILES:
        name = name.rsplit(".", 1)[0] if "." in name else ""
    return name or None


def import_closure(module: str) -> set[Path]:
    """Files a module needs: its imports, transitively, plus their packages' ``__init__``."""
    seen: set[str] = set()
    todo = [module]
    while todo:
        current = todo.pop()
        if current in seen:
            continue
        seen.add(current)
        parts = current.split(".")
        todo += [".".join(parts[:i]) for i in range(1, len(parts))
                 if ".".join(parts[:i]) in FILES]
        todo += [r for _, name in project_imports(FILES[current]) if (r := _resolve(name))]
    return {FILES[m].relative_to(ROOT) for m in seen}


def command_module(cmd: str) -> str:
    """The module of the click command a ``teachclip [--params P] a b ...`` line runs."""
    words = shlex.split(cmd)
    assert words[0] == "teachclip", cmd
    words = words[1:]
    if words[:1] == ["--params"]:
        words = words[2:]
    command: click.Command = main
    while isinstance(command, click.Group):
        command = command.commands[words.pop(0)]
    assert command.callback is not None
    return command.callback.__module__


def _substitute(text: str, key: str) -> str:
    def value(match: re.Match) -> str:
        ref = match.group(1)
        if ref == "key":
            return key
        node = PARAMS
        for part in ref.split("."):
            node = node[part]
        return str(node)
    return re.sub(r"\$\{([a-z_.]+)\}", value, text)


def stages() -> list[tuple[str, list[str], list[str]]]:
    """(stage name, command lines, deps) of every stage, foreach expanded over params.yaml."""
    out = []
    for name, stage in DVC["stages"].items():
        body = stage.get("do", stage)
        keys = list(PARAMS[stage["foreach"][2:-1]]) if "foreach" in stage else [""]
        cmds = body["cmd"] if isinstance(body["cmd"], list) else [body["cmd"]]
        for key in keys:
            label = f"{name}@{key}" if key else name
            out.append((label, [_substitute(c, key) for c in cmds],
                        [_substitute(d, key) for d in body.get("deps", [])]))
    return out


def covered(path: Path, deps: list[str]) -> bool:
    return any(path == Path(d) or Path(d) in path.parents for d in deps)


@pytest.mark.parametrize(("stage", "cmds", "deps"), stages(), ids=[s[0] for s in stages()])
def test_deps_cover_the_command_import_closure(stage: str, cmds: list[str],
                                               deps: list[str]) -> None:
    needed = set().union(*(import_closure(command_module(c)) for c in cmds))
    missing = sorted(str(p) for p in needed if not covered(p, deps))
    assert not missing, f"{stage}: code its command runs is not a dep: {missing}"


def test_student_only_code_is_no_teacher_dep() -> None:
    """Editing the student's training code must not rerun (or invalidate) any teacher stage."""
    student_only = [Path("pipeline/train/student.py"), Path("pipeline/train/student_run.py"),
                    Path("stages/student_train.py")]
    for stage, _cmds, deps in stages():
        if stage.startswith(("teacher_", "dataset", "frames", "clip")):
            hits = [str(p) for p in student_only if covered(p, deps)]
            assert not hits, f"{stage} depends on student-only code {hits}"


def test_the_closure_finds_code_imported_inside_functions(tmp_path: Path) -> None:
    """The check must see the same imports the layer test sees (function bodies included)."""
    closure = import_closure("stages.teacher_score")
    assert Path("pipeline/cache/writer.py") in closure
    assert Path("pipeline/models/clip.py") in closure
    assert Path("pipeline/models/tokenizer.py") in closure
    assert Path("pipeline/train/student.py") not in closure


def test_foreach_tables_are_the_params_tables() -> None:
    assert DVC["stages"]["teacher_train"]["foreach"] == "${teachers}"
    assert DVC["stages"]["teacher_score"]["foreach"] == "${teachers}"
    assert DVC["stages"]["baseline"]["foreach"] == "${baselines}"
    assert DVC["stages"]["student"]["foreach"] == "${students}"
