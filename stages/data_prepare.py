"""``teachclip data prepare``: the dataset stage of dvc.yaml, for any dataset, from params alone.

``--format synth`` renders the embedded synthetic set with the options of ``data: {synth: ...}``;
any importer format imports ``--root`` with the options of ``data: {import: ...}``. Either way
the manifest lands in ``paths.dataset``, so every later stage is the same for every dataset.
"""

from __future__ import annotations

from pathlib import Path

import click

from pipeline.data.importers import IMPORTERS
from stages.data_import import import_cmd
from stages.data_synth import synth
from stages.groups import data
from stages.params import resolved_options

FORMATS = ("synth", *sorted(IMPORTERS))


@data.command("prepare")
@click.option("--format", "fmt", type=click.Choice(FORMATS), default="synth", show_default=True,
              help="synth (render the embedded default) or the annotation format to import.")
@click.option("--root", type=click.Path(path_type=Path), required=True,
              help="Importers: the dataset directory (csv/jsonl: the file). synth: the "
                   "renderer's code (its only source, tracked by dvc).")
@click.option("--out", "out_dir", type=click.Path(file_okay=False), required=True,
              help="Manifest directory [params: paths.dataset].")
@click.pass_context
def prepare(ctx: click.Context, fmt: str, root: Path, out_dir: str) -> None:
    """Render or import the dataset into OUT (options from data.synth / data.import)."""
    if fmt == "synth":
        values = resolved_options(ctx, synth, ("data", "synth"), out_dir=out_dir)
        ctx.invoke(synth, **values)
        return
    if not root.exists():
        raise click.BadParameter(f"{root} does not exist: put the {fmt} dataset there or point "
                                 "data.prepare.root at it", param_hint="--root")
    values = resolved_options(ctx, import_cmd, ("data", "import"), [fmt, str(root)],
                              out=out_dir)
    ctx.invoke(import_cmd, **values)
