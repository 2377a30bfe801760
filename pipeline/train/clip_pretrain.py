"""Pre-training the tiny CLIP of the embedded default on frame-level "image captions".

Why: real TeachCLIP starts every model (teachers, baseline, student) from CLIP weights that were
pre-trained on images and text. The synthetic benchmark mirrors that: each informative segment
of a synthetic video has a short phrase of its own (``segments.csv``), so the frames decoded
inside a segment paired with that phrase form an image–text set. Filler frames are never seen
here, exactly as a web-trained CLIP never saw our filler; the video models then have to learn
that filler carries no information, which is where frame weighting and distillation pay off.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn

from pipeline.atomic import SUMMARY_FILE, publish_dir, tmp_path_for, write_json_atomic
from pipeline.data.frames_store import check_resolution
from pipeline.distributed import DistInfo
from pipeline.errors import InputError
from pipeline.locks import output_lock
from pipeline.models.clip import ClipTowers
from pipeline.models.preprocess import normalize_frames
from pipeline.models.tokenizer import ClipTokenizer
from pipeline.train.batches import global_batches
from pipeline.train.loop import TRAIN_LOG, LoopConfig, TrainResult, run_training
from pipeline.train.losses import symmetric_infonce
from pipeline.train.schedule import warmup_cosine
from pipeline.train.setup import (
    OptimConfig,
    build_adamw,
    check_batch,
    resume_fingerprint,
    seeded_towers,
)


@dataclass
class PretrainConfig:
    """A CLIP pre-training run on (frame, phrase) pairs."""

    clip: str = "tiny"
    epochs: int = 20
    batch_size: int = 128
    lr: float = 1e-3
    weight_decay: float = 0.1
    warmup_fraction: float = 0.1
    max_words: int = 16
    seed: int = 0
    log_every: int = 10


@dataclass
class ImageTextPairs:
    """Frames (uint8 [N,H,W,3]) paired with tokenised phrases."""

    images: np.ndarray
    token_ids: np.ndarray
    token_mask: np.ndarray
    source: Path | None = None  # the frames file the images come from (for messages)


def frame_phrase_pairs(
    frames: np.ndarray,
    mask: np.ndarray,
    timestamps: np.ndarray,
    video_ids: list[str],
    segments: pd.DataFrame,
    train_ids: set[str],
) -> tuple[np.ndarray, list[str]]:
    """(frames inside a segment, that segment's phrase) for the training videos.

    ``timestamps`` [N,F] are the seconds of each sampled frame (NaN for padding); a frame pairs
    with a segment when ``start <= t < end``.
    """
    by_video = {vid: group for vid, group in segments.groupby("video_id")}
    images, texts = [], []
    for row, vid in enumerate(video_ids):
        if vid not in train_ids or vid not in by_video:
            continue
        for _, seg in by_video[vid].iterrows():
            inside = mask[row] & (timestamps[row] >= seg["start"]) & (timestamps[row] < seg["end"])
            for slot in np.flatnonzero(inside):
                images.append(frames[row, slot])
                texts.append(str(seg["text"]))
    if not images:
        raise InputError("no frame falls inside any training segment: nothing to pre-train on")
    return np.stack(images), texts


class _ImageTextStep(nn.Module):
    def __init__(self, towers: ClipTowers) -> None:
        super().__init__()
        self.towers = towers

    def forward(self, ids: torch.Tensor, pixels: torch.Tensor) -> torch.Tensor:
        sentence, _ = self.towers.encode_text(ids)
        image = self.towers.encode_frames(pixels)[:, 0]
        sentence = nn.functional.normalize(sentence, dim=-1)
        image = nn.functional.normalize(image, dim=-1)
        return self.towers.logit_scale.exp() * sentence @ image.T


def pretrain_clip(
    *,
    config: PretrainConfig,
    pairs: ImageTextPairs,
    work_dir: Path,
    device: torch.device,
    on_progress: Callable[[int], None] | None = None,
) -> tuple[ClipTowers, TrainResult]:
    """Contrastive image–text training of a CLIP from ``config.clip`` (usually ``tiny``)."""
    towers = seeded_towers(config.clip, config.seed, freeze=False).to(device)
    check_resolution(*pairs.images.shape[1:3], towers.image_size, model=f"CLIP {config.clip!r}",
                     file=pairs.source)
    step_model = _ImageTextStep(towers)
    n = len(pairs.images)
    batch = config.batch_size
    check_batch(n, batch, 1, "frame-phrase pairs")
    steps = n // batch
    optim = OptimConfig(epochs=config.epochs, batch_size=batch, lr=config.lr,
                        weight_decay=config.weight_decay, warmup_fraction=config.warmup_fraction)
    optimizer = build_adamw([p for p in towers.parameters() if p.requires_grad], optim, device)
    scheduler = warmup_cosine(optimizer, steps * config.epochs, config.warmup_fraction)
    images = torch.from_numpy(pairs.images)
    ids = torch.from_numpy(pairs.token_ids)

    def batches(epoch: int) -> Any:
        for index in global_batches(n, batch, config.seed, epoch):
            index_t = torch.from_numpy(index)
            yield ids[index_t], images[index_t]

    def step_fn(model: nn.Module, item: Any) -> dict[str, torch.Tensor]:
        batch_ids, batch_images = item
        pixels = batch_images.to(device)[:, None]
        frame_mask = torch.ones(pixels.shape[:2], dtype=torch.bool, device=device)
        logits = model(batch_ids.to(device), normalize_frames(pixels, frame_mask))
        loss = symmetric_infonce(logits)
        return {"total": loss, "gt": loss.detach()}

    result = run_training(
        model=step_model, optimizer=optimizer, scheduler=scheduler, step_fn=step_fn,
        batches_for_epoch=batches, steps_per_epoch=steps,
        config=LoopConfig(epochs=config.epochs, seed=config.seed, log_every=config.log_every,
                          fingerprint=resume_fingerprint(config, {"n_pairs": n})),
        work_dir=work_dir, device=device, dist_info=DistInfo(), after_step=towers.clamp_logit_scale,
        batch_size_of=lambda item: len(item[0]), on_progress=on_progress,
    )
    return towers, result


def build_pairs(frames: Any, segments_csv: Path, manifest: Any, max_words: int
                ) -> ImageTextPairs:
    """Read frames.h5 and segments.csv into tokenised (frame, phrase) pairs of the train split."""
    if not Path(segments_csv).is_file():
        raise InputError("segments file not found", file=segments_csv)
    segments = pd.read_csv(segments_csv, dtype={"video_id": str, "text": str})
    all_frames, mask = frames.read(np.arange(len(frames)))
    timestamps = frames.timestamps()
    train_ids = set(manifest.split("train").videos["video_id"])
    images, texts = frame_phrase_pairs(all_frames, mask, timestamps, list(frames.video_ids),
                                       segments, train_ids)
    token_ids, token_mask = ClipTokenizer.default().encode(texts, max_words)
    return ImageTextPairs(images, np.asarray(token_ids), np.asarray(token_mask),
                          getattr(frames, "path", None))


def run_clip_pretrain(*, config: PretrainConfig, frames: Any, manifest: Any, segments_csv: Path,
                      out_dir: Path, device: torch.device,
                      on_progress: Callable[[int], None] | None = None) -> dict[str, Any]:
    """Pre-train in ``<out>.tmp`` (resumable) and publish ``<out>`` in the Hugging Face layout
    with ``pretrain_log.tsv`` and ``summary.json``; returns the summary."""
    pairs = build_pairs(frames, segments_csv, manifest, config.max_words)
    work = tmp_path_for(out_dir)
    with output_lock(out_dir):
        towers, result = pretrain_clip(config=config, pairs=pairs, work_dir=work / "train",
                                       device=device, on_progress=on_progress)
        model_dir = work / "model"
        if model_dir.exists():  # left by a run killed while saving: rewritten whole below
            shutil.rmtree(model_dir)
        towers.model.save_pretrained(model_dir)
        log = work / "train" / TRAIN_LOG
        # Fewer steps than --log-every write no log row: publish an empty log, as dvc expects.
        (model_dir / "pretrain_log.tsv").write_bytes(log.read_bytes() if log.exists() else b"")
        summary = {"pairs": len(pairs.images), "steps": result.steps, "epochs": config.epochs,
                   "clip": config.clip, "seed": config.seed}
        write_json_atomic(model_dir / SUMMARY_FILE, summary)
        publish_dir(model_dir, out_dir)
        shutil.rmtree(work)
    return summary

