"""``teachclip student import``: a student trained by the official TeachCLIP code, in our format.

The output directory (``model.pt`` + ``summary.json``) is what ``teachclip evaluate --model DIR``
and ``teachclip index`` read, so a lab can evaluate, index and search a student trained with the
official scripts without retraining it here.
"""

from __future__ import annotations

import click

from pipeline.models.official_student import DEFAULT_MAX_WORDS, import_student
from stages.groups import student


@student.command("import")
@click.argument("checkpoint", type=click.Path(exists=True, dir_okay=False))
@click.option("--out", required=True, type=click.Path(file_okay=False),
              help="Output directory (model.pt, summary.json).")
@click.option("--clip", "clip_source", default=None,
              help="CLIP source, used only when the checkpoint carries no clip.* weights.")
@click.option("--max-words", type=int, default=DEFAULT_MAX_WORDS, show_default=True,
              help="Caption length L the student was trained with (64 for DiDeMo/ActivityNet "
                   "paragraphs); evaluation tokenises with it.")
@click.option("--afa-temperature", type=float, default=0.1, show_default=True,
              help="AFA aggregation temperature (the official code hard-codes 0.1).")
@click.option("--name", default=None, help="Student name recorded in the summary.")
def import_cmd(checkpoint: str, out: str, clip_source: str | None, max_words: int,
               afa_temperature: float, name: str | None) -> None:
    """Convert an official TeachCLIP student CHECKPOINT (pytorch_model.bin.N) into our format."""
    summary = import_student(checkpoint, out, clip_source=clip_source, max_words=max_words,
                             name=name, afa_temperature=afa_temperature)
    config = summary["config"]
    click.echo(f"wrote {out} (student, {config['temporal']}"
               f"{'' if config['temporal'] == 'meanP' else ' x' + str(config['temporal_layers'])}"
               f" + AFA, L={summary['max_words']}); source sha256 {summary['source_sha256']}")
