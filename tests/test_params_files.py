"""Every key in the shipped params files names a real option of the command it configures.

click ignores unknown default_map keys silently, so a typo in params.yaml would otherwise be a
setting that quietly does nothing.
"""

from __future__ import annotations

from pathlib import Path

import click
import pytest
import yaml

from stages.cli import main

ROOT = Path(__file__).resolve().parents[1]
PARAMS_FILES = ["params.yaml", "params.msrvtt.yaml"]


def _command(path: list[str]) -> click.Command:
    command: click.Command = main
    for name in path:
        assert isinstance(command, click.Group), f"{path}: {name} is not below a group"
        command = command.commands[name]
    return command


def _option_keys(command: click.Command) -> set[str]:
    keys = set()
    for param in command.params:
        for opt in getattr(param, "opts", []):
            keys.add(opt.lstrip("-").replace("-", "_"))
        if param.name:
            keys.add(param.name)
    return keys


def _sections(params: dict, prefix: list[str]):
    for key, value in params.items():
        if key in ("teachers", "students") and not prefix:
            continue
        path = [*prefix, key]
        command = _command(path)
        if isinstance(command, click.Group):
            yield from _sections(value, path)
        else:
            yield path, value


@pytest.mark.parametrize("name", PARAMS_FILES)
def test_every_params_key_is_an_option(name: str) -> None:
    params = yaml.safe_load((ROOT / name).read_text(encoding="utf-8"))
    checked = 0
    for path, section in _sections(params, []):
        unknown = set(section) - _option_keys(_command(path))
        assert not unknown, f"{name}: {'.'.join(path)} has unknown keys {sorted(unknown)}"
        checked += 1
    teacher_keys = _option_keys(_command(["teacher", "train"])) | {"score"}
    for teacher, entry in params.get("teachers", {}).items():
        unknown = set(entry) - teacher_keys
        assert not unknown, f"{name}: teachers.{teacher} has unknown keys {sorted(unknown)}"
    student_keys = _option_keys(_command(["student", "train"])) | {"caches"}
    for student, entry in params.get("students", {}).items():
        unknown = set(entry or {}) - student_keys
        assert not unknown, f"{name}: students.{student} has unknown keys {sorted(unknown)}"
    assert checked >= 4


def test_dvc_stages_use_configured_names() -> None:
    """dvc.yaml's foreach lists match params.yaml's teachers/students (no orphan stage)."""
    params = yaml.safe_load((ROOT / "params.yaml").read_text(encoding="utf-8"))
    dvc = yaml.safe_load((ROOT / "dvc.yaml").read_text(encoding="utf-8"))
    stages = dvc["stages"]
    assert stages["teacher_train"]["foreach"] == "${teachers}"
    assert stages["teacher_score"]["foreach"] == "${teachers}"
    trained = set(stages["baseline"]["foreach"]) | set(stages["student"]["foreach"]) | {
        "xclip_ts2net"}
    assert trained == set(params["students"])
    assert set(stages["evaluate"]["foreach"]) == set(params["students"])
    for student in stages["student"]["foreach"]:
        assert student in params["teachers"]
