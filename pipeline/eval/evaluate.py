"""Retrieval evaluation shared by every model kind (teachers, baseline, student).

A model is evaluated through the small ``Retriever`` protocol (encode texts, encode videos,
score a block), so the same code measures the X-CLIP teacher's cross-grained score and the
student's single dot product. Videos are embedded once each; captions once each; everything is
keyed by id (captions whose video failed to decode are dropped and counted, never shifted).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
import torch

from pipeline.data.manifest import Manifest
from pipeline.eval.metrics import retrieval_metrics
from pipeline.models.preprocess import normalize_frames

Features = dict[str, torch.Tensor]


class Retriever(Protocol):
    """What evaluation needs from a model."""

    def encode_text(self, ids: torch.Tensor, mask: torch.Tensor) -> Features: ...

    def encode_video(self, frames: torch.Tensor, video_mask: torch.Tensor) -> Features: ...

    def score(self, text: Features, video: Features) -> torch.Tensor: ...


@dataclass
class EvalSet:
    """One split's captions and videos, aligned by id to frames.h5 rows."""

    video_ids: list[str]
    frame_rows: np.ndarray  # [Nv] rows in frames.h5
    caption_ids: list[str]
    texts: list[str]
    caption_video: np.ndarray  # [Nt] column (index into video_ids) of each caption's video
    dropped_captions: int  # captions whose video is absent from frames.h5
    dropped_caption_ids: list[str] = field(default_factory=list)  # those captions


def build_eval_set(manifest: Manifest, frames: Any, split: str) -> EvalSet:
    """Select a split's videos present in frames.h5 and their captions, keyed by id."""
    part = manifest.split(split)
    present = set(frames.video_ids)
    video_ids = [v for v in part.videos["video_id"] if v in present]
    col_of = {v: i for i, v in enumerate(video_ids)}
    keep = part.captions["video_id"].isin(col_of)
    captions = part.captions[keep]
    return EvalSet(
        video_ids=video_ids,
        frame_rows=np.array([frames.row_of(v) for v in video_ids], dtype=np.int64),
        caption_ids=list(captions["caption_id"]),
        texts=list(captions["text"]),
        caption_video=np.array([col_of[v] for v in captions["video_id"]], dtype=np.int64),
        dropped_captions=int((~keep).sum()),
        dropped_caption_ids=[str(c) for c in part.captions["caption_id"][~keep]],
    )


def cat_features(parts: Sequence[Features]) -> Features:
    """Concatenate per-batch feature dicts along the item axis."""
    return {key: torch.cat([p[key] for p in parts], dim=0) for key in parts[0]}


@torch.no_grad()
def encode_all_videos(
    model: Retriever,
    frames: Any,
    rows: np.ndarray,
    device: torch.device,
    batch_size: int,
    autocast: Callable[[], Any] | None = None,
    on_progress: Callable[[int], None] | None = None,
) -> Features:
    """Encode the videos at ``rows`` of frames.h5, in that order, batch by batch."""
    parts: list[Features] = []
    for start in range(0, len(rows), batch_size):
        chunk = rows[start:start + batch_size]
        pixels, mask = frames.read(chunk)
        pixels_t = torch.from_numpy(np.ascontiguousarray(pixels)).to(device)
        mask_t = torch.from_numpy(np.asarray(mask, dtype=bool)).to(device)
        with autocast() if autocast else nullcontext():
            feats = model.encode_video(normalize_frames(pixels_t, mask_t), mask_t)
        parts.append({k: v.float() for k, v in feats.items()})
        if on_progress:
            on_progress(len(chunk))
    return cat_features(parts)


@torch.no_grad()
def encode_all_texts(
    model: Retriever,
    ids: np.ndarray,
    mask: np.ndarray,
    device: torch.device,
    batch_size: int,
    autocast: Callable[[], Any] | None = None,
) -> Features:
    """Encode pre-tokenised texts batch by batch."""
    parts: list[Features] = []
    for start in range(0, len(ids), batch_size):
        ids_t = torch.from_numpy(ids[start:start + batch_size]).to(device)
        mask_t = torch.from_numpy(mask[start:start + batch_size]).to(device)
        with autocast() if autocast else nullcontext():
            feats = model.encode_text(ids_t, mask_t)
        parts.append({k: v.float() for k, v in feats.items()})
    return cat_features(parts)


@torch.no_grad()
def evaluate_retrieval(
    model: Retriever,
    frames: Any,
    eval_set: EvalSet,
    tokenizer: Any,
    max_words: int,
    device: torch.device,
    batch_size: int = 64,
    autocast: Callable[[], Any] | None = None,
) -> dict[str, float]:
    """Text→video and video→text metrics of ``model`` on ``eval_set`` (method §7)."""
    ids, mask = tokenizer.encode(eval_set.texts, max_words)
    text = encode_all_texts(model, np.asarray(ids), np.asarray(mask), device, batch_size,
                            autocast)
    video = encode_all_videos(model, frames, eval_set.frame_rows, device, batch_size, autocast)
    sim = model.score(text, video).float().cpu().numpy()
    metrics = retrieval_metrics(sim, eval_set.caption_video)
    return {k: float(v) for k, v in metrics.items() if np.ndim(v) == 0}
