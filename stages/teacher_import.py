"""``teachclip teacher import``: a released official checkpoint as one of our model directories."""

from __future__ import annotations

import click

from pipeline.models.imports import import_teacher
from pipeline.models.teachers import TEACHERS
from stages.groups import teacher


@teacher.command("import")
@click.argument("kind", type=click.Choice(sorted(TEACHERS)))
@click.argument("checkpoint", type=click.Path(exists=True, dir_okay=False))
@click.option("--out", required=True, type=click.Path(file_okay=False),
              help="Output directory (model.pt, summary.json).")
@click.option("--clip", "clip_source", default=None,
              help="CLIP source, used only when the checkpoint carries no clip.* weights.")
@click.option("--max-words", type=int, default=None,
              help="Expected L (read from the checkpoint; a different value is an error).")
@click.option("--max-frames", type=int, default=None,
              help="Expected F (read from the checkpoint; a different value is an error).")
@click.option("--official-masking/--no-official-masking", default=True, show_default=True,
              help="Score exactly like the released code (padding takes part).")
@click.option("--name", default=None, help="Teacher name recorded in the summary.")
def import_cmd(kind: str, checkpoint: str, out: str, clip_source: str | None,
               max_words: int | None, max_frames: int | None, official_masking: bool,
               name: str | None) -> None:
    """Convert a released official KIND CHECKPOINT into our model format."""
    summary = import_teacher(kind, checkpoint, out, clip_source=clip_source,
                             max_words=max_words, max_frames=max_frames, name=name,
                             official_masking=official_masking)
    click.echo(f"wrote {out} ({kind}, L={summary['max_words']}, F={summary['max_frames']}, "
               f"official_masking={summary['official_masking']}); source sha256 "
               f"{summary['source_sha256']}")
