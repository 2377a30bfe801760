"""The ``teachclip`` click group and its sub-groups; stage modules attach commands to these.

``teachclip --params params.yaml <command> ...`` fills every option's default from the section of
params.yaml named after the command path (``frames:``, ``teacher: {score: ...}``), so DVC stages
stay short and every value lives in params.yaml, while an explicit CLI option still wins.
"""

from __future__ import annotations

import sys
from typing import Any

import click

from pipeline.errors import TeachclipError
from stages.params import defaults_for, load_params, paths_of


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
        params = load_params(params_file, ctx.command)  # validated before any work starts
        ctx.obj["params"] = params
        ctx.obj["params_file"] = params_file
        ctx.default_map = defaults_for(ctx.command, params, paths_of(params))
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
