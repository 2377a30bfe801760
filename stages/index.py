"""``teachclip index``: embed every video of frames.h5 once into a searchable embeddings.h5."""

from __future__ import annotations

from typing import Any

import click
import numpy as np
from tqdm import tqdm

from pipeline.data.frames_store import FramesReader
from pipeline.data.manifest import SPLITS, Manifest
from pipeline.eval.model_eval import load_retrieval_model
from pipeline.retrieval.bigfile import write_bigfile
from pipeline.retrieval.index import DTYPES, index_from_frames, read_index, write_index
from stages.groups import main
from stages.options import (
    BIGFILE_OPTION,
    DEVICE_OPTION,
    MODEL_OPTION,
    amp_option,
    frames_option,
    manifest_option,
    resolve_device,
)

#: Storage type of an index (only the serving commands write indexes).
DTYPE_OPTION = click.option(
    "--dtype", type=click.Choice(DTYPES), default="float32", show_default=True,
    help="Storage type of the embeddings.")


def write_index_outputs(out: str, ids: list[str], emb: np.ndarray, attrs: dict[str, Any],
                        dtype: str, failed: list[tuple[str, str]],
                        bigfile_dir: str | None) -> None:
    """Write the index (+ bigfile export) and print what was written and what failed."""
    write_index(out, ids, emb, attrs=attrs, dtype=dtype, failed=failed)
    for video_id, reason in failed:
        click.echo(f"failed: {video_id}: {reason}", err=True)
    click.echo(f"wrote {out}: {len(ids)} videos × {emb.shape[1]} ({dtype}), "
               f"{len(failed)} failed")
    if bigfile_dir:
        write_bigfile(bigfile_dir, ids, read_index(out).embeddings)
        click.echo(f"wrote bigfile {bigfile_dir}")


@main.command("index")
@MODEL_OPTION
@frames_option(help="frames.h5 whose videos are embedded.")
@manifest_option(required=False, help="Manifest directory (needed by --split).")
@click.option("--split", type=click.Choice(SPLITS), default=None,
              help="Index only this split's videos (needs --manifest); default: all of frames.h5.")
@click.option("--out", required=True, type=click.Path(dir_okay=False), help="embeddings.h5")
@DTYPE_OPTION
@BIGFILE_OPTION
@DEVICE_OPTION
@click.option("--batch-size", type=int, default=64, show_default=True,
              help="Videos per encoder batch.")
@amp_option()
def index(model_path: str, frames_path: str, manifest_dir: str | None, split: str | None,
          out: str, dtype: str, bigfile_dir: str | None, device: str, batch_size: int,
          amp: str) -> None:
    """Embed every video of frames.h5 once into a searchable embeddings.h5."""
    dev = resolve_device(device)
    loaded = load_retrieval_model(model_path, dev)
    frames = FramesReader(frames_path)
    manifest = Manifest.load(manifest_dir) if manifest_dir else None
    with tqdm(desc="index", unit="video") as bar:
        ids, emb, attrs = index_from_frames(loaded, frames, dev, manifest=manifest, split=split,
                                            batch_size=batch_size, amp=amp,
                                            on_progress=bar.update)
    write_index_outputs(out, ids, emb, attrs, dtype, [], bigfile_dir)
