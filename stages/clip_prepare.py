"""``teachclip clip prepare``: the CLIP stage of dvc.yaml — pre-train the tiny CLIP or take yours.

``--mode pretrain`` (embedded default) runs ``clip pretrain`` with its own params section and
``--source`` as the frame–phrase segments file; ``--mode weights`` converts the user's CLIP
weights (OpenAI ``.pt`` or a Hugging Face directory at ``--source``) into ``paths.clip``, with the
source's sha256 in ``summary.json``.
"""

from __future__ import annotations

import click

from pipeline.models.clip_weights import export_clip_weights
from stages.clip_pretrain import clip_group, pretrain
from stages.params import resolved_options


@clip_group.command("prepare")
@click.option("--mode", type=click.Choice(["pretrain", "weights"]), default="weights",
              show_default=True,
              help="pretrain: the embedded default's tiny CLIP; weights: your CLIP checkpoint.")
@click.option("--source", type=click.Path(exists=True), required=True,
              help="weights: an OpenAI .pt or a Hugging Face CLIP directory; pretrain: the "
                   "synthetic set's segments.csv.")
@click.option("--out", type=click.Path(file_okay=False), required=True,
              help="CLIP directory (Hugging Face layout) [params: paths.clip].")
@click.pass_context
def prepare(ctx: click.Context, mode: str, source: str, out: str) -> None:
    """Make the pipeline's CLIP directory OUT from SOURCE (options of clip.pretrain apply)."""
    if mode == "pretrain":
        values = resolved_options(ctx, pretrain, ("clip", "pretrain"), segments=source, out=out)
        ctx.invoke(pretrain, **values)
        return
    summary = export_clip_weights(source, out)
    click.echo(f"wrote {out}: CLIP from {source} (sha256 {summary['source_sha256'][:12]}…, "
               f"{summary['image_size']} px, embed dim {summary['embed_dim']})")
