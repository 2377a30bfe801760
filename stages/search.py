"""``teachclip search``: rank the indexed videos for a text query (exact dot product).

``--sheet hits.png`` also draws the top-k as a contact sheet (rank, id, score and a few frames
per video), reading the frames from ``--frames`` (a frames.h5 holding the hits) or decoding
them from ``--videos`` (the folder or list given to ``teachclip embed``).
"""

from __future__ import annotations

import json

import click

from pipeline.data.frames_store import FramesReader
from pipeline.errors import InputError
from pipeline.eval.model_eval import load_retrieval_model
from pipeline.eval.plots import pyplot, require_png
from pipeline.retrieval.index import DEFAULT_CHUNK_ROWS, read_index, search
from pipeline.retrieval.sheet import search_sheet
from stages.groups import main
from stages.options import DEVICE_OPTION, MODEL_OPTION, resolve_device


@main.command("search")
@click.argument("query")
@click.option("--index", "index_path", required=True, type=click.Path(dir_okay=False),
              help="embeddings.h5 written by `teachclip index` or `teachclip embed`.")
@MODEL_OPTION
@click.option("--top-k", type=click.IntRange(min=1), default=10, show_default=True,
              help="Number of videos to return.")
@click.option("--chunk-rows", type=click.IntRange(min=1), default=DEFAULT_CHUNK_ROWS,
              show_default=True,
              help="Index rows scored per block (bounds memory for large indexes).")
@click.option("--json", "as_json", is_flag=True, help="Print the hits as JSON.")
@click.option("--sheet", default=None, type=click.Path(dir_okay=False),
              help="Also draw the hits as a contact sheet into this .png (needs matplotlib "
                   "and --frames or --videos).")
@click.option("--frames", "frames_path", default=None,
              type=click.Path(exists=True, dir_okay=False),
              help="--sheet: frames.h5 holding the hits' frames (e.g. the one indexed).")
@click.option("--videos", default=None, type=click.Path(exists=True),
              help="--sheet: folder (recursive) or .txt list of the video files, as given to "
                   "`teachclip embed`; frames are decoded from them.")
@click.option("--sheet-frames", type=click.IntRange(min=1), default=4, show_default=True,
              help="--sheet: frames shown per video, spread over its length.")
@DEVICE_OPTION
def search_cmd(query: str, index_path: str, model_path: str, top_k: int, chunk_rows: int,
               as_json: bool, sheet: str | None, frames_path: str | None, videos: str | None,
               sheet_frames: int, device: str) -> None:
    """Rank the indexed videos for the text QUERY (exact dot product)."""
    if sheet is not None:
        require_png(sheet, "--sheet")
        if (frames_path is None) == (videos is None):
            raise InputError("--sheet needs the videos' pixels: give --frames FRAMES.h5 or "
                             "--videos DIR|LIST (one of them)")
        pyplot()
    elif frames_path is not None or videos is not None:
        raise InputError("--frames/--videos only serve --sheet: add --sheet hits.png")
    dev = resolve_device(device)
    hits = search(read_index(index_path), load_retrieval_model(model_path, dev), query, top_k,
                  dev, chunk_rows)
    if sheet is not None:
        frames = FramesReader(frames_path) if frames_path is not None else None
        search_sheet(query, hits, sheet, frames=frames, videos=videos, per_video=sheet_frames)
    if as_json:
        click.echo(json.dumps([{"rank": h.rank, "video_id": h.video_id, "score": h.score}
                               for h in hits], indent=2))
    else:
        for hit in hits:
            click.echo(f"{hit.rank:>4}  {hit.score:+.4f}  {hit.video_id}")
    if sheet is not None:
        click.echo(f"wrote {sheet}", err=as_json)
