"""``teachclip index | search | embed``: serve a trained student as a text→video search engine."""

from __future__ import annotations

import json

import click
from tqdm import tqdm

from pipeline.data.frames_store import FramesReader
from pipeline.data.manifest import SPLITS, Manifest
from pipeline.data.sampling import POLICIES
from pipeline.eval.model_eval import load_retrieval_model
from pipeline.retrieval.bigfile import write_bigfile
from pipeline.retrieval.index import (
    DEFAULT_CHUNK_ROWS,
    DTYPES,
    embed_videos,
    index_from_frames,
    list_videos,
    read_index,
    search,
    write_index,
)
from stages.groups import main
from stages.options import resolve_device

_MODEL = click.option("--model", "model_path", required=True, type=click.Path(exists=True),
                      help="Student/baseline model directory (model.pt) or checkpoint file.")
_DEVICE = click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto",
                       show_default=True)
_DTYPE = click.option("--dtype", type=click.Choice(DTYPES), default="float32", show_default=True,
                      help="Storage type of the embeddings.")
_BIGFILE = click.option("--bigfile", "bigfile_dir", default=None, type=click.Path(dir_okay=True),
                        help="Also export the official bigfile layout to this directory.")


def _finish(out: str, ids: list[str], emb, attrs: dict, dtype: str, failed: list,
            bigfile_dir: str | None) -> None:
    write_index(out, ids, emb, attrs=attrs, dtype=dtype, failed=failed)
    for video_id, reason in failed:
        click.echo(f"failed: {video_id}: {reason}", err=True)
    click.echo(f"wrote {out}: {len(ids)} videos × {emb.shape[1]} ({dtype}), "
               f"{len(failed)} failed")
    if bigfile_dir:
        write_bigfile(bigfile_dir, ids, read_index(out).embeddings)
        click.echo(f"wrote bigfile {bigfile_dir}")


@main.command("index")
@_MODEL
@click.option("--frames", "frames_path", required=True, type=click.Path(dir_okay=False))
@click.option("--manifest", "manifest_dir", default=None, type=click.Path(file_okay=False))
@click.option("--split", type=click.Choice(SPLITS), default=None,
              help="Index only this split's videos (needs --manifest); default: all of frames.h5.")
@click.option("--out", required=True, type=click.Path(dir_okay=False), help="embeddings.h5")
@_DTYPE
@_BIGFILE
@_DEVICE
@click.option("--batch-size", type=int, default=64, show_default=True)
def index(model_path: str, frames_path: str, manifest_dir: str | None, split: str | None,
          out: str, dtype: str, bigfile_dir: str | None, device: str, batch_size: int) -> None:
    """Embed every video of frames.h5 once into a searchable embeddings.h5."""
    dev = resolve_device(device)
    loaded = load_retrieval_model(model_path, dev)
    frames = FramesReader(frames_path)
    manifest = Manifest.load(manifest_dir) if manifest_dir else None
    with tqdm(desc="index", unit="video") as bar:
        ids, emb, attrs = index_from_frames(loaded, frames, dev, manifest=manifest, split=split,
                                            batch_size=batch_size, on_progress=bar.update)
    _finish(out, ids, emb, attrs, dtype, [], bigfile_dir)


@main.command("search")
@click.argument("query")
@click.option("--index", "index_path", required=True, type=click.Path(dir_okay=False))
@_MODEL
@click.option("--top-k", type=int, default=10, show_default=True)
@click.option("--chunk-rows", type=int, default=DEFAULT_CHUNK_ROWS, show_default=True,
              help="Index rows scored per block (bounds memory for large indexes).")
@click.option("--json", "as_json", is_flag=True, help="Print the hits as JSON.")
@_DEVICE
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


@main.command("embed")
@_MODEL
@click.option("--videos", required=True, type=click.Path(exists=True),
              help="A folder of videos (recursive) or a .txt list of paths.")
@click.option("--out", required=True, type=click.Path(dir_okay=False), help="embeddings.h5")
@click.option("--policy", type=click.Choice(POLICIES), default="official", show_default=True)
@click.option("--max-frames", type=int, default=12, show_default=True)
@click.option("--timeout", type=float, default=300.0, show_default=True)
@_DTYPE
@_BIGFILE
@_DEVICE
@click.option("--batch-size", type=int, default=16, show_default=True)
def embed(model_path: str, videos: str, out: str, policy: str, max_frames: int, timeout: float,
          dtype: str, bigfile_dir: str | None, device: str, batch_size: int) -> None:
    """Embed your own videos (no manifest): decode, sample, embed, write an index."""
    dev = resolve_device(device)
    loaded = load_retrieval_model(model_path, dev)
    listed = list_videos(videos)
    with tqdm(total=len(listed), desc="embed", unit="video") as bar:
        ids, emb, failed, attrs = embed_videos(
            loaded, listed, dev, policy=policy, max_frames=max_frames, batch_size=batch_size,
            timeout=timeout, on_progress=bar.update)
    _finish(out, ids, emb, attrs, dtype, failed, bigfile_dir)
