"""The ``teachclip`` click group and its sub-groups; stage modules attach commands to these.

``teachclip --params params.yaml <command> ...`` fills every option's default from the section of
params.yaml named after the command path (``frames:``, ``teacher: {score: ...}``), so DVC stages
stay short and every value lives in params.yaml, while an explicit CLI option still wins.
"""

from __future__ import annotations

import errno
import sys
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import click
from tqdm import tqdm

from pipeline.errors import TeachclipError, TeachclipWarning
from stages.params import defaults_for, load_params, paths_of


def os_error_line(exc: OSError) -> str:
    """``file: reason (ERRNO)`` for an I/O error no library code anticipated."""
    name = errno.errorcode.get(exc.errno, "") if exc.errno is not None else ""
    reason = (exc.strerror or str(exc)) + (f" ({name})" if name else "")
    target = exc.filename if exc.filename is not None else ""
    return f"{target}: {reason}" if target else reason


@contextmanager
def warning_lines() -> Iterator[None]:
    """Show TeachclipWarnings as one ``Warning: ...`` line each (no source location: the cause
    is in the user's data or settings, not in our code); other warnings as Python shows them."""
    shown = warnings.showwarning

    def show(message: Warning | str, category: type[Warning], *args: Any, **kw: Any) -> None:
        if issubclass(category, TeachclipWarning):
            tqdm.write(f"Warning: {message}", file=sys.stderr)  # on its own line under a bar
        else:
            shown(message, category, *args, **kw)

    with warnings.catch_warnings():
        warnings.simplefilter("default", TeachclipWarning)
        warnings.showwarning = show
        yield


class TeachclipGroup(click.Group):
    """A group that turns library errors into a clean one-line message and exit status 1.

    An ``OSError`` that escaped the library (a full disk under torch.save, an unwritable output
    directory) is an I/O problem of the machine, not a bug: it also becomes one ``Error:`` line
    naming the file and the reason.
    """

    def invoke(self, ctx: click.Context) -> Any:
        try:
            with warning_lines():
                return super().invoke(ctx)
        except TeachclipError as exc:
            click.echo(f"Error: {exc}", err=True)
            sys.exit(1)
        except OSError as exc:
            click.echo(f"Error: {os_error_line(exc)}", err=True)
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
