"""``teachclip clip pretrain``: the embedded default's tiny CLIP, trained on frame–phrase pairs.

Real runs skip this stage and point ``--clip`` at a CLIP checkpoint directory or file.
"""

from __future__ import annotations

import time
from pathlib import Path

import click
from tqdm import tqdm

from pipeline.data.frames_store import FramesReader
from pipeline.data.manifest import Manifest
from pipeline.train.clip_pretrain import PretrainConfig, run_clip_pretrain
from stages.groups import main
from stages.options import DEVICE_OPTION, frames_option, manifest_option, resolve_device


@main.group("clip")
def clip_group() -> None:
    """CLIP weights for the embedded default."""


@clip_group.command("pretrain")
@frames_option()
@manifest_option()
@click.option("--segments", type=click.Path(dir_okay=False), required=True,
              help="segments.csv of the synthetic set (video_id, start, end, text).")
@click.option("--out", type=click.Path(file_okay=False), required=True,
              help="Output directory (Hugging Face CLIP layout).")
@click.option("--clip", "clip_source", default="tiny", show_default=True,
              help="Starting point: 'tiny', 'tiny:{json}' or a CLIP directory/file.")
@click.option("--epochs", type=int, default=20, show_default=True,
              help="Passes over the frame–phrase pairs.")
@click.option("--batch-size", type=int, default=128, show_default=True,
              help="Pairs per contrastive batch (in-batch negatives).")
@click.option("--lr", type=float, default=1e-3, show_default=True,
              help="Peak learning rate (warm-up, then cosine decay).")
@click.option("--weight-decay", type=float, default=0.1, show_default=True,
              help="AdamW weight decay.")
@click.option("--max-words", type=int, default=16, show_default=True,
              help="Tokens per phrase incl. start/end.")
@click.option("--seed", type=int, default=0, show_default=True,
              help="Seeds the initial weights and the batch order.")
@DEVICE_OPTION
def pretrain(frames_path: str, manifest_dir: str, segments: str, out: str, clip_source: str,
             epochs: int, batch_size: int, lr: float, weight_decay: float, max_words: int,
             seed: int, device: str) -> None:
    """Contrastively pre-train a CLIP on frames inside annotated segments and their phrases."""
    config = PretrainConfig(clip=clip_source, epochs=epochs, batch_size=batch_size, lr=lr,
                            weight_decay=weight_decay, max_words=max_words, seed=seed)
    frames = FramesReader(frames_path)
    out_dir = Path(out)
    started = time.perf_counter()
    with tqdm(desc="clip pretrain", unit="step") as bar:
        summary = run_clip_pretrain(config=config, frames=frames,
                                    manifest=Manifest.load(manifest_dir),
                                    segments_csv=Path(segments), out_dir=out_dir,
                                    device=resolve_device(device), on_progress=bar.update)
    click.echo(f"wrote {out_dir}: CLIP pre-trained on {summary['pairs']} frame–phrase pairs, "
               f"{summary['steps']} steps in {time.perf_counter() - started:.1f} s")



