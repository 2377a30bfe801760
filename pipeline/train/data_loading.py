"""Batches of (caption, video frames, teacher targets) for teacher and student training.

One Dataset item is one *rank's share of one global batch*: a single sorted HDF5 read of that
share's frames (duplicates allowed: several captions of one video), the captions' token ids
(tokenised once, up front), and, for distillation, each teacher's B×B logits and B×F relevance
for the *global* batch (the loss sees the global batch on every rank). The batch plan is a pure
function of (seed, epoch), so a resumed run sees exactly the batches a straight run would.
HDF5 files open lazily inside each DataLoader worker (the readers are picklable).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from pipeline.data.manifest import Manifest
from pipeline.data.selection import select_split
from pipeline.errors import TeachclipError
from pipeline.train.batches import global_batches, rank_slice


@dataclass
class TeacherSource:
    """One teacher cache plus, per training caption, its cache row and its video's cache column."""

    cache: Any  # pipeline.cache.reader.TeacherCache (picklable, lazy)
    rows: np.ndarray  # [N] cache row of each training caption
    cols: np.ndarray  # [N] cache column of each training caption's video


@dataclass
class TrainingItems:
    """Everything indexed by training caption position (no positional alignment elsewhere)."""

    token_ids: np.ndarray  # int64 [N, L]
    token_mask: np.ndarray  # int64 [N, L]
    frame_rows: np.ndarray  # int64 [N]: row of the caption's video in frames.h5
    teachers: list[TeacherSource] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.frame_rows)


class GlobalBatchDataset(Dataset):
    """Item ``i`` = this rank's share of global batch ``i`` of the current epoch."""

    def __init__(
        self,
        items: TrainingItems,
        frames: Any,  # pipeline.data.frames_store.FramesReader
        global_batch: int,
        seed: int,
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        self.items = items
        self.frames = frames
        self.global_batch = global_batch
        self.seed = seed
        self.rank = rank
        self.world_size = world_size
        self.plan: list[np.ndarray] = []
        self.set_epoch(0)

    def set_epoch(self, epoch: int) -> None:
        """Fix the batch plan for ``epoch`` (call before creating the epoch's iterator)."""
        self.plan = global_batches(len(self.items), self.global_batch, self.seed, epoch)

    def __len__(self) -> int:
        return len(self.plan)

    def __getitem__(self, index: int) -> dict[str, Any]:
        """The batch, or ``{"error": exc}`` for a TeachclipError (see :func:`epoch_loader`)."""
        try:
            return self._batch(index)
        except TeachclipError as exc:
            return {"error": exc}

    def _batch(self, index: int) -> dict[str, Any]:
        global_idx = self.plan[index]
        local_idx = rank_slice(global_idx, self.rank, self.world_size)
        frames, video_mask = self.frames.read(self.items.frame_rows[local_idx])
        batch: dict[str, Any] = {
            "caption_index": torch.from_numpy(local_idx.astype(np.int64)),
            "input_ids": torch.from_numpy(self.items.token_ids[local_idx]),
            "attention_mask": torch.from_numpy(self.items.token_mask[local_idx]),
            "frames": torch.from_numpy(np.ascontiguousarray(frames)),
            "video_mask": torch.from_numpy(np.asarray(video_mask, dtype=bool)),
            "teachers": [],
        }
        for source in self.items.teachers:
            sim, rel_logits, rel_mask = source.cache.batch(
                source.rows[global_idx], source.cols[global_idx]
            )
            # The cache stores pre-softmax scores; R = softmax(scores / T) (artifacts §5).
            attrs = getattr(source.cache, "attrs", {})
            temperature = float(attrs.get("relevance_temperature", 1.0))
            rel_logits = np.asarray(rel_logits, dtype=np.float32) / np.float32(temperature)
            batch["teachers"].append({
                "logits": torch.from_numpy(np.asarray(sim, dtype=np.float32)),
                "relevance_logits": torch.from_numpy(rel_logits),
                "relevance_mask": torch.from_numpy(np.asarray(rel_mask, dtype=bool)),
            })
        return batch


def _identity(batch: Any) -> Any:
    return batch


def epoch_loader(
    dataset: GlobalBatchDataset, epoch: int, workers: int, pin_memory: bool = False
) -> Iterator[dict[str, Any]]:
    """Iterate one epoch of batches (workers each open their own HDF5 handles).

    A TeachclipError in a worker (a damaged frames or cache chunk) comes back as the batch
    ``{"error": exc}`` and is raised here as itself: re-raised by the DataLoader it would carry
    the worker's whole traceback in its message.
    """
    dataset.set_epoch(epoch)
    loader = DataLoader(
        dataset,
        batch_size=None,
        shuffle=False,
        num_workers=workers,
        collate_fn=_identity,
        pin_memory=pin_memory,
        prefetch_factor=4 if workers > 0 else None,
    )
    for batch in loader:
        if "error" in batch:
            raise batch["error"]
        yield batch


def move_batch(batch: dict[str, Any], device: torch.device) -> dict[str, Any]:
    """Move every tensor of a batch (including teacher targets) to ``device``."""
    out: dict[str, Any] = {}
    for key, value in batch.items():
        if isinstance(value, torch.Tensor):
            out[key] = value.to(device, non_blocking=True)
        elif key == "teachers":
            out[key] = [{k: v.to(device, non_blocking=True) for k, v in t.items()} for t in value]
        else:
            out[key] = value
    return out


def tokenize_all(tokenizer: Any, texts: Sequence[str], max_words: int) -> tuple[np.ndarray, ...]:
    """Tokenise every caption once (never per batch)."""
    ids, mask = tokenizer.encode(list(texts), max_words)
    return np.asarray(ids, dtype=np.int64), np.asarray(mask, dtype=np.int64)


def build_training_items(
    manifest: Manifest,
    frames: Any,
    tokenizer: Any,
    max_words: int,
    caches: Sequence[Any],
) -> tuple[TrainingItems, int]:
    """Train-split captions whose video is in frames.h5, with rows into every teacher cache.

    Returns the items and the number of captions dropped because their video failed to decode.
    """
    selection = select_split(manifest, frames, "train")
    captions = selection.captions
    ids, mask = tokenize_all(tokenizer, list(captions["text"]), max_words)
    frame_rows = np.array([frames.row_of(v) for v in captions["video_id"]], dtype=np.int64)
    sources = []
    for cache in caches:
        rows = np.asarray(cache.row_of_caption(list(captions["caption_id"])), dtype=np.int64)
        cols = np.asarray(cache.col_of_video(list(captions["video_id"])), dtype=np.int64)
        sources.append(TeacherSource(cache, rows, cols))
    return TrainingItems(ids, mask, frame_rows, sources), selection.dropped_captions
