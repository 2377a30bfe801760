"""``teachclip embed``: embed your own videos (no manifest) into a searchable embeddings.h5."""

from __future__ import annotations

import click
from tqdm import tqdm

from pipeline.data.sampling import POLICIES
from pipeline.eval.model_eval import load_retrieval_model
from pipeline.retrieval.index import embed_videos, list_videos
from stages.groups import main
from stages.index import (
    BIGFILE_OPTION,
    DEVICE_OPTION,
    DTYPE_OPTION,
    MODEL_OPTION,
    write_index_outputs,
)
from stages.options import resolve_device


@main.command("embed")
@MODEL_OPTION
@click.option("--videos", required=True, type=click.Path(exists=True),
              help="A folder of videos (recursive) or a .txt list of paths.")
@click.option("--out", required=True, type=click.Path(dir_okay=False), help="embeddings.h5")
@click.option("--policy", type=click.Choice(POLICIES), default="official", show_default=True)
@click.option("--max-frames", type=int, default=12, show_default=True)
@click.option("--timeout", type=float, default=300.0, show_default=True)
@DTYPE_OPTION
@BIGFILE_OPTION
@DEVICE_OPTION
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
    write_index_outputs(out, ids, emb, attrs, dtype, failed, bigfile_dir)
