"""Params handling for every command: ``--params`` files and their named entries.

``teachclip --params params.yaml <command> ...`` fills every option's default from the section
of params.yaml named after the command path (``frames:``, ``teacher: {score: ...}``), so DVC stages
stay short and every value lives in params.yaml, while an explicit CLI option still wins.
Commands that take ``--name`` also read a named entry (``teachers.NAME``, ``students.NAME``).
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

import click
import yaml
from click.core import ParameterSource

from pipeline.errors import InputError


def _underscore_keys(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k).replace("-", "_"): _underscore_keys(v) for k, v in value.items()}
    return value


def load_params(path: str | Path) -> dict[str, Any]:
    """Read a params YAML file into a nested dict (dashes in keys become underscores)."""
    path = Path(path)
    if not path.is_file():
        raise click.BadParameter(f"params file not found: {path}", param_hint="--params")
    with open(path, encoding="utf-8") as handle:
        data = yaml.safe_load(handle) or {}
    if not isinstance(data, dict):
        raise click.BadParameter(f"{path}: top level must be a mapping", param_hint="--params")
    return _underscore_keys(data)


def defaults_for(command: click.Command, section: dict[str, Any]) -> dict[str, Any]:
    """Translate a params section into click's ``default_map`` for ``command``.

    YAML keys are option names (``out``, ``batch_size``); click looks defaults up by parameter
    name, which differs when an option names its destination (``--out`` → ``out_dir``). Sub-
    sections of groups are translated recursively; keys that match nothing are kept as they are
    (commands such as ``teacher train --name`` read their own entries from the raw params).
    """
    out = dict(section)
    if isinstance(command, click.Group):
        for name, sub in command.commands.items():
            key = name.replace("-", "_")
            if isinstance(section.get(key), dict):
                out[key] = defaults_for(sub, section[key])
                if key != name:
                    out[name] = out[key]
        return out
    for param in command.params:
        for opt in getattr(param, "opts", []):
            key = opt.lstrip("-").replace("-", "_")
            if key in section and param.name is not None and key != param.name:
                out[param.name] = section[key]
    return out


def named_entry(ctx: click.Context, table: str, name: str | None) -> dict[str, Any]:
    """``params[table][name]`` (empty without ``--params`` or ``--name``); an unknown name is an
    error when the table exists, naming the known ones."""
    if not name:
        return {}
    root = ctx.find_root().obj or {}
    entries = (root.get("params") or {}).get(table) or {}
    if name not in entries:
        if entries:
            raise InputError(f"no {table}.{name} in params (known: {sorted(entries)})")
        return {}
    return dict(entries[name] or {})


def apply_entry(ctx: click.Context, entry: dict[str, Any], values: dict[str, Any], where: str,
                ignore: Iterable[str] = ()) -> None:
    """Fill options not given on the command line from ``entry``; unknown keys are errors.

    ``ignore``: keys of the entry that belong to other commands or to dvc.yaml templating.
    """
    unknown = sorted(set(entry) - set(values) - set(ignore))
    if unknown:
        raise InputError(f"{where}: unknown option(s) {unknown} (known: {sorted(values)})")
    for key, value in entry.items():
        if key in values and ctx.get_parameter_source(key) != ParameterSource.COMMANDLINE:
            values[key] = value
