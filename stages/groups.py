"""The ``teachclip`` click group and its sub-groups; stage modules attach commands to these.

``teachclip --params params.yaml <command> ...`` fills every option's default from the section of
params.yaml named after the command path (``frames:``, ``teacher: {score: ...}``), so DVC stages
stay short and every value lives in params.yaml, while an explicit CLI option still wins.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import click
import yaml

from pipeline.errors import TeachclipError


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


class TeachclipGroup(click.Group):
    """A group that turns library errors into a clean one-line message and exit status 1."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except TeachclipError as exc:
            click.echo(f"Error: {exc}", err=True)
            sys.exit(1)


@click.group(cls=TeachclipGroup)
@click.option(
    "--params", "params_file", type=click.Path(dir_okay=False), default=None,
    help="YAML file whose sections (named after commands) give option defaults.",
)
@click.version_option(package_name="teachclip")
@click.pass_context
def main(ctx: click.Context, params_file: str | None) -> None:
    """teachclip: distil heavy text-video retrieval teachers into a CLIP4Clip student."""
    ctx.ensure_object(dict)
    if params_file is not None:
        params = load_params(params_file)
        ctx.obj["params"] = params
        ctx.obj["params_file"] = params_file
        ctx.default_map = defaults_for(ctx.command, params)
    else:
        ctx.obj.setdefault("params", {})


@main.group(cls=TeachclipGroup)
def data() -> None:
    """Import datasets into a manifest, or render the synthetic default."""


@main.group(cls=TeachclipGroup)
def teacher() -> None:
    """Train or import a teacher, and score its cache."""


@main.group(cls=TeachclipGroup)
def student() -> None:
    """Train the CLIP4Clip student (with or without teacher caches)."""


@main.group(cls=TeachclipGroup)
def cache() -> None:
    """Inspect and verify teacher caches."""
