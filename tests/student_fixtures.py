"""Tiny artifacts for student/evaluate/index tests: frames.h5, manifest, teacher cache, models.

Everything is built in milliseconds with the real writers (FramesWriter, TeacherCacheWriter,
save_model), so the tests exercise the same file formats the stages read.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from pipeline.cache.schema import CacheMeta
from pipeline.cache.writer import TeacherCacheWriter
from pipeline.data.frames_store import FramesReader, FramesWriter
from pipeline.data.manifest import Manifest

SIZE = 32  # the tiny CLIP's image size
F = 4
MAX_WORDS = 32
COLOURS = ["red", "green", "blue", "yellow", "purple", "orange", "white", "black", "pink",
           "brown", "grey", "cyan", "gold", "teal", "navy"]


def make_manifest(root: Path, n_train: int = 8, n_val: int = 3, n_test: int = 4,
                  captions_per_video: int = 2) -> Manifest:
    """Videos train/val/test with ``captions_per_video`` captions each (saved under root)."""
    videos, captions = [], []
    splits = ["train"] * n_train + ["val"] * n_val + ["test"] * n_test
    for i, split in enumerate(splits):
        vid = f"v{i:02d}"
        videos.append({"video_id": vid, "path": f"{vid}.mp4", "split": split})
        for j in range(captions_per_video):
            captions.append({"caption_id": f"{vid}_c{j}", "video_id": vid, "split": split,
                             "text": f"a {COLOURS[i % len(COLOURS)]} square moving {j}"})
    manifest = Manifest(pd.DataFrame(videos), pd.DataFrame(captions), root=root)
    manifest.save(root / "manifest")
    return Manifest.load(root / "manifest")


def make_frames(path: Path, video_ids: Sequence[str], seed: int = 0,
                short: Sequence[str] = ()) -> FramesReader:
    """A finished frames.h5 with random frames; videos in ``short`` have 2 real frames."""
    rng = np.random.default_rng(seed)
    tmp = path.with_name(path.name + ".tmp")
    attrs = {"sampling_policy": "test", "max_frames": F, "resolution": SIZE}
    writer = FramesWriter.open(tmp, list(video_ids), max_frames=F, size=SIZE, attrs=attrs,
                               compression="none")
    with writer:
        for row, vid in enumerate(video_ids):
            frames = rng.integers(0, 256, (F, SIZE, SIZE, 3), dtype=np.uint8)
            mask = np.ones(F, dtype=bool)
            if vid in short:
                mask[2:] = False
                frames[2:] = 0
            writer.write(row, frames, mask, int(mask.sum()))
        writer.finalize(attrs)
    os.replace(tmp, path)
    return FramesReader(path)


def make_cache(path: Path, manifest: Manifest, frames: FramesReader, *, seed: int = 0,
               max_frames: int = F, frames_digest: str | None = None,
               drop_caption: str | None = None, max_words: int = MAX_WORDS,
               relevance_scale: float = 1.0) -> Path:
    """A finished teacher cache with random scores for the train split.

    ``relevance_scale`` multiplies the stored relevance logits (the same cache read at
    temperature ``1 / relevance_scale``).
    """
    rng = np.random.default_rng(seed)
    train = manifest.split("train")
    caption_ids = [c for c in train.captions["caption_id"] if c != drop_caption]
    cap_video = dict(zip(train.captions["caption_id"], train.captions["video_id"], strict=True))
    video_ids = list(train.videos["video_id"])
    col = {v: i for i, v in enumerate(video_ids)}
    meta = CacheMeta(teacher_kind="xclip", checkpoint_sha256="0" * 64,
                     frames_digest=frames_digest or frames.digest,
                     manifest_digest=manifest.digest(), max_words=max_words,
                     max_frames=max_frames, logit_scale=100.0)
    writer = TeacherCacheWriter(path, caption_ids=caption_ids, video_ids=video_ids,
                                caption_video=[col[cap_video[c]] for c in caption_ids],
                                meta=meta, block_rows=4)
    n = len(caption_ids)
    sim = (rng.normal(size=(n, len(video_ids))) * 10).astype(np.float32)
    rel = (rng.normal(size=(n, max_frames)) * relevance_scale).astype(np.float32)
    mask = np.ones((n, max_frames), dtype=bool)
    for b in writer.pending_blocks():
        s, e = writer.block_range(b)
        writer.write_block(b, sim[s:e], rel[s:e], mask[s:e])
    writer.finalize()
    return path
