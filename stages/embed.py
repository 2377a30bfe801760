"""``teachclip embed``: embed your own videos (no manifest) into a searchable embeddings.h5."""

from __future__ import annotations

import click
from tqdm import tqdm

from pipeline.eval.model_eval import load_retrieval_model
from pipeline.retrieval.embed import embed_videos, list_videos
from stages.groups import main
from stages.index import DTYPE_OPTION, write_index_outputs
from stages.options import (
    BIGFILE_OPTION,
    DEVICE_OPTION,
    MODEL_OPTION,
    amp_option,
    honor_sar_option,
    policy_option,
    resolve_device,
)


@main.command("embed")
@MODEL_OPTION
@click.option("--videos", required=True, type=click.Path(exists=True),
              help="A folder of videos (recursive) or a .txt list of paths.")
@click.option("--out", required=True, type=click.Path(dir_okay=False), help="embeddings.h5")
@policy_option()
@honor_sar_option()
@click.option("--max-frames", type=int, default=12, show_default=True,
              help="F: frames sampled per video (as the frames stage).")
@click.option("--timeout", type=float, default=300.0, show_default=True,
              help="Seconds per video before ffmpeg is killed and the video counted as failed.")
@click.option("--workers", type=click.IntRange(min=1), default=2, show_default=True,
              help="Videos decoded in parallel (one ffmpeg process each; 1 = in this process).")
@DTYPE_OPTION
@BIGFILE_OPTION
@DEVICE_OPTION
@amp_option()
@click.option("--batch-size", type=int, default=16, show_default=True,
              help="Videos per encoder batch.")
def embed(model_path: str, videos: str, out: str, policy: str, honor_sar: bool, max_frames: int,
          timeout: float, workers: int, dtype: str, bigfile_dir: str | None, device: str,
          amp: str, batch_size: int) -> None:
    """Embed your own videos (no manifest): decode, sample, embed, write an index."""
    dev = resolve_device(device)
    loaded = load_retrieval_model(model_path, dev)
    listed = list_videos(videos)
    with tqdm(total=len(listed), desc="embed", unit="video") as bar:
        ids, emb, failed, attrs = embed_videos(
            loaded, listed, dev, policy=policy, max_frames=max_frames, batch_size=batch_size,
            timeout=timeout, amp=amp, workers=workers, honor_sar=honor_sar,
            on_progress=bar.update)
    write_index_outputs(out, ids, emb, attrs, dtype, failed, bigfile_dir)
