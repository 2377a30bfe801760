"""``teachclip search``: rank the indexed videos for a text query (exact dot product)."""

from __future__ import annotations

import json

import click

from pipeline.eval.model_eval import load_retrieval_model
from pipeline.retrieval.index import DEFAULT_CHUNK_ROWS, read_index, search
from stages.groups import main
from stages.options import DEVICE_OPTION, MODEL_OPTION, resolve_device


@main.command("search")
@click.argument("query")
@click.option("--index", "index_path", required=True, type=click.Path(dir_okay=False))
@MODEL_OPTION
@click.option("--top-k", type=click.IntRange(min=1), default=10, show_default=True)
@click.option("--chunk-rows", type=click.IntRange(min=1), default=DEFAULT_CHUNK_ROWS,
              show_default=True,
              help="Index rows scored per block (bounds memory for large indexes).")
@click.option("--json", "as_json", is_flag=True, help="Print the hits as JSON.")
@DEVICE_OPTION
def search_cmd(query: str, index_path: str, model_path: str, top_k: int, chunk_rows: int,
               as_json: bool, device: str) -> None:
    """Rank the indexed videos for the text QUERY (exact dot product)."""
    dev = resolve_device(device)
    hits = search(read_index(index_path), load_retrieval_model(model_path, dev), query, top_k,
                  dev, chunk_rows)
    if as_json:
        click.echo(json.dumps([{"rank": h.rank, "video_id": h.video_id, "score": h.score}
                               for h in hits], indent=2))
        return
    for hit in hits:
        click.echo(f"{hit.rank:>4}  {hit.score:+.4f}  {hit.video_id}")
