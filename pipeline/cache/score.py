"""Scoring a teacher once into its cache, and the teacher's own test-split metrics.

Why row blocks: the cache is the dense caption × video logit matrix (artifacts §5), far too big to
compute in one go for MSR-VTT (180k × 9k), so it is produced block by block of caption rows,
each block flushed and flagged done by :class:`TeacherCacheWriter`. A killed run recomputes only
the blocks not yet flagged; several processes (torchrun) each own a strided set of blocks in
their own shard file, merged without a copy into an HDF5 virtual dataset.

Memory: every video of the split is encoded once up front and its features stay on ``device``
for the whole run (X-CLIP: ``video`` D + ``frames`` F×D + mask F per video; MSR-VTT train,
9k × 13 × 512 float32 ≈ 240 MB). Captions are encoded block by block, each exactly once, and a
block's text features are dropped after it is written (X-CLIP: ``sentence`` D + ``words`` L×D +
mask L per caption, i.e. ~66 KB at L=32, D=512, so encoding all 180k captions up front would hold
~12 GB; one 1024-row block holds ~68 MB). The head's working set is bounded by ``chunk_pairs``.

Determinism: block ``b`` is computed the same way whatever the number of processes (text batches
start at the block's first row, every rank encodes all videos in the same batches), so a
2-process cache equals the 1-process cache array for array.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import torch

from pipeline.cache.merge import merge_shards
from pipeline.cache.schema import CacheMeta, shard_path
from pipeline.cache.verify import verify as verify_problems
from pipeline.cache.writer import TeacherCacheWriter
from pipeline.data.frames_store import check_resolution
from pipeline.data.manifest import Manifest
from pipeline.distributed import barrier
from pipeline.errors import InputError, MismatchError
from pipeline.eval.adapters import TeacherRetriever
from pipeline.eval.evaluate import (
    EvalSet,
    build_eval_set,
    encode_all_texts,
    encode_all_videos,
    evaluate_retrieval,
)
from pipeline.eval.metrics_file import write_metrics_files
from pipeline.eval.model_eval import warn_dropped
from pipeline.models.teachers.base import DEFAULT_CHUNK_PAIRS, Teacher, slice_features

Autocast = Callable[[], Any]


@dataclass
class ScoreResult:
    """What one process did (the CLI prints it; ``blocks_computed`` is what resume saves)."""

    path: Path  # the final cache (merged on rank 0; this rank's shard elsewhere)
    shard: Path | None  # this rank's shard file when distributed
    n_captions: int
    n_videos: int
    blocks_total: int  # blocks this process owns
    blocks_computed: int  # blocks computed in this call (the rest were done by a killed run)
    pairs_scored: int  # caption × video pairs computed in this call by this process
    seconds: float  # wall time of this call in this process (encoding + scoring + writing)

    @property
    def pairs_per_s(self) -> float:
        return self.pairs_scored / self.seconds if self.seconds > 0 else 0.0


def cache_meta(teacher: Teacher, *, checkpoint_sha256: str, frames: Any,
               manifest: Manifest) -> CacheMeta:
    """The provenance a cache records for ``teacher`` scored on ``frames``/``manifest``.

    ``relevance_temperature`` is 1: ``teacher.relevance_logits`` already divides by the teacher's
    own relevance temperature (kept in ``teacher_config``), so readers must not divide again.
    """
    return CacheMeta(
        teacher_kind=teacher.kind,
        checkpoint_sha256=checkpoint_sha256,
        frames_digest=str(frames.digest),
        manifest_digest=manifest.digest(),
        max_words=int(teacher.max_words),
        max_frames=int(teacher.max_frames),
        logit_scale=float(teacher.clip.logit_scale.detach().exp().cpu()),
        official_masking=bool(getattr(teacher, "official_masking", False)),
        relevance_temperature=1.0,
        teacher_config=dict(teacher.config_dict()),
    )


def scoring_set(manifest: Manifest, frames: Any, split: str) -> EvalSet:
    """Captions of ``split`` whose video is in frames.h5, and those videos (manifest order)."""
    items = build_eval_set(manifest, frames, split)
    if not items.caption_ids:
        raise InputError(f"split {split!r} has no captions whose video is in frames.h5",
                         file=getattr(frames, "path", None))
    return items


def _check_frames(teacher: Teacher, frames: Any) -> None:
    """Refuse frames the teacher cannot take: another F, another resolution."""
    path = getattr(frames, "path", None)
    if int(frames.max_frames) != int(teacher.max_frames):
        raise MismatchError("frames per video (F)", int(teacher.max_frames),
                            int(frames.max_frames), file=path, expected_in="the teacher",
                            found_in=str(path or "the frames"),
                            fix=f"extract frames with --max-frames {int(teacher.max_frames)}, "
                                "or train the teacher on these frames")
    check_resolution(frames.height, frames.width, int(teacher.clip.image_size),
                     model=f"the {teacher.kind} teacher", file=path)


def _score_block(teacher: Teacher, text: dict[str, torch.Tensor],
                 videos: dict[str, torch.Tensor], own_cols: np.ndarray, chunk_pairs: int
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Logits of the block's captions × all videos, and each caption's relevance with its video."""
    sim = teacher.score(text, videos, chunk_pairs=chunk_pairs)
    own = slice_features(videos, torch.as_tensor(own_cols, dtype=torch.long))
    rel, rel_mask = teacher.relevance_logits(text, own)
    return (sim.float().cpu().numpy(), rel.float().cpu().numpy(),
            rel_mask.bool().cpu().numpy())


def _row_folds(items: EvalSet, fold_teachers: Sequence[Teacher],
               video_fold: Mapping[str, int] | None) -> np.ndarray:
    """Which scorer takes each caption row: its video's fold when cross-fitting, else 0."""
    if not fold_teachers:
        return np.zeros(len(items.caption_ids), dtype=np.int64)
    if video_fold is None:
        raise ValueError("cross-fitting needs the fold of every video")
    folds = np.array([video_fold[items.video_ids[c]] for c in items.caption_video],
                     dtype=np.int64)
    if folds.min() < 0 or folds.max() >= len(fold_teachers):
        raise ValueError(f"video folds must be in 0..{len(fold_teachers) - 1}")
    return folds


def _score_rows(scorers: Sequence[Teacher], videos: Sequence[dict[str, torch.Tensor]],
                row_fold: np.ndarray, ids: np.ndarray, mask: np.ndarray, own_cols: np.ndarray,
                device: torch.device, batch_size: int, autocast: Autocast | None,
                chunk_pairs: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One block's rows, each scored by the scorer of its fold (one scorer: every row)."""
    parts = []
    for k, scorer in enumerate(scorers):
        rows = np.flatnonzero(row_fold == k)
        if rows.size:
            text = encode_all_texts(scorer, ids[rows], mask[rows], device, batch_size, autocast)
            parts.append((rows, _score_block(scorer, text, videos[k], own_cols[rows],
                                             chunk_pairs)))
    if len(parts) == 1 and len(parts[0][0]) == len(row_fold):
        return parts[0][1]
    first = parts[0][1]
    out = tuple(np.empty((len(row_fold), *a.shape[1:]), dtype=a.dtype) for a in first)
    for rows, arrays in parts:
        for target, values in zip(out, arrays, strict=True):
            target[rows] = values
    return out[0], out[1], out[2]


@torch.no_grad()
def score_teacher(
    teacher: Teacher,
    frames: Any,
    manifest: Manifest,
    *,
    out_path: str | Path,
    meta: CacheMeta,
    tokenizer: Any,
    device: torch.device,
    split: str = "train",
    max_words: int | None = None,
    batch_size: int = 64,
    block_rows: int | None = None,
    chunk_pairs: int = DEFAULT_CHUNK_PAIRS,
    rank: int = 0,
    world: int = 1,
    autocast: Autocast | None = None,
    on_mismatch: str = "error",
    on_start: Callable[[int], None] | None = None,
    on_progress: Callable[[int], None] | None = None,
    fold_teachers: Sequence[Teacher] = (),
    video_fold: Mapping[str, int] | None = None,
) -> ScoreResult:
    """Write the teacher cache of ``split`` to ``out_path`` (resuming its ``.tmp`` if present).

    With ``world > 1`` every rank writes ``shard_path(out_path, rank, world)`` (strided blocks),
    all ranks meet at a barrier, and rank 0 merges the shards into ``out_path`` (virtual dataset
    referencing the shards, which must stay beside it); a second barrier lets no rank return
    before the merged file exists. ``on_start`` gets the number of caption rows still to score
    here, ``on_progress`` the rows just written. ``autocast`` applies to the encoders only: the
    head's temperature-0.01 softmaxes stay in float32.

    Cross-fitting: with ``fold_teachers`` (fold teacher k never trained on fold k's videos) each
    caption row is scored by ``fold_teachers[caption_fold[row]]`` against every video; ``teacher``
    then only supplies the checks (F, L, resolution), and ``meta`` must say so.
    """
    out_path = Path(out_path)
    _check_frames(teacher, frames)
    words = int(max_words or teacher.max_words)
    if words != int(teacher.max_words):
        raise MismatchError("max_words (L)", int(teacher.max_words), words)
    items = scoring_set(manifest, frames, split)
    target = shard_path(out_path, rank, world) if world > 1 else out_path
    teacher.eval()
    started = time.perf_counter()
    if _already_done(target, meta, items):  # finished before a kill hit the merge/publish step
        if on_start is not None:
            on_start(0)
        return _merge(out_path, target, rank, world, items, started)
    writer = TeacherCacheWriter(
        target, caption_ids=items.caption_ids, video_ids=items.video_ids,
        caption_video=items.caption_video, meta=meta, block_rows=block_rows,
        shard_rank=rank, shard_world=world, on_mismatch=on_mismatch,
    )
    pairs = 0
    with writer:
        pending = writer.pending_blocks()
        if on_start is not None:
            on_start(sum(stop - start for start, stop in map(writer.block_range, pending)))
        if pending:
            scorers = list(fold_teachers) or [teacher]
            row_fold = _row_folds(items, fold_teachers, video_fold)
            videos = [encode_all_videos(t, frames, items.frame_rows, device, batch_size,
                                        autocast) for t in scorers]
            ids, mask = tokenizer.encode(items.texts, words)
            ids, mask = np.asarray(ids, dtype=np.int64), np.asarray(mask, dtype=np.int64)
            for block in pending:
                start, stop = writer.block_range(block)
                sim, rel, rel_mask = _score_rows(
                    scorers, videos, row_fold[start:stop], ids[start:stop], mask[start:stop],
                    items.caption_video[start:stop], device, batch_size, autocast, chunk_pairs)
                writer.write_block(block, sim, rel, rel_mask)
                pairs += (stop - start) * len(items.video_ids)
                if on_progress is not None:
                    on_progress(stop - start)
            del videos
        writer.finalize()
        blocks_total = len(writer.owned_blocks())
    result = _merge(out_path, target, rank, world, items, started)
    result.blocks_total, result.blocks_computed, result.pairs_scored = (
        blocks_total, len(pending), pairs)
    return result


def _already_done(target: Path, meta: CacheMeta, items: EvalSet) -> bool:
    """True when ``target`` is a finished cache (or shard) of exactly this teacher and data."""
    if not target.is_file():
        return False
    try:
        with h5py.File(target, "r") as handle:
            return bool(
                CacheMeta.from_attrs(dict(handle.attrs)) == meta
                and list(handle["caption_ids"].asstr()[:]) == list(items.caption_ids)
                and list(handle["video_ids"].asstr()[:]) == list(items.video_ids)
                and not verify_problems(target)
            )
    except (OSError, KeyError):
        return False


def _merge(out_path: Path, target: Path, rank: int, world: int, items: EvalSet,
           started: float) -> ScoreResult:
    """Barrier, rank 0 merges the shards into ``out_path``, barrier (no-op for 1 process)."""
    if world > 1:
        barrier()
        if rank == 0:
            merge_shards([shard_path(out_path, r, world) for r in range(world)], out_path)
        barrier()
    return ScoreResult(
        path=out_path, shard=target if world > 1 else None,
        n_captions=len(items.caption_ids), n_videos=len(items.video_ids),
        blocks_total=0, blocks_computed=0, pairs_scored=0,
        seconds=time.perf_counter() - started,
    )


@torch.no_grad()
def teacher_test_metrics(
    teacher: Teacher,
    frames: Any,
    manifest: Manifest,
    *,
    tokenizer: Any,
    device: torch.device,
    split: str = "test",
    batch_size: int = 64,
    autocast: Autocast | None = None,
    name: str | None = None,
    checkpoint_sha256: str | None = None,
    model_path: str | Path | None = None,
    seed: int | None = None,
) -> dict[str, Any]:
    """The teacher's own retrieval metrics on ``split`` in the layout ``teachclip evaluate``
    writes (keys from :func:`pipeline.eval.metrics.retrieval_metrics`, role ``teacher``), so the
    teacher's row appears in the results table next to the students it taught. ``seed`` is the
    teacher's training seed (None when imported), provenance for ``teachclip report --paired``."""
    _check_frames(teacher, frames)
    items = scoring_set(manifest, frames, split)
    warn_dropped(items, split, getattr(frames, "path", None))
    teacher.eval()
    metrics = evaluate_retrieval(TeacherRetriever(teacher), frames, items, tokenizer,
                                 int(teacher.max_words), device, batch_size,
                                 autocast)
    return {
        "model": name or teacher.kind,
        "kind": teacher.kind,
        "role": "teacher",
        "split": split,
        "n_videos": len(items.video_ids),
        "dropped_captions": items.dropped_captions,
        "model_sha256": checkpoint_sha256,
        "model_path": str(model_path) if model_path is not None else None,
        "seed": seed,
        "frames_digest": str(frames.digest),
        "manifest_digest": manifest.digest(),
        **{k: int(v) if k.endswith("n_queries") else v for k, v in metrics.items()},
    }


def write_metrics(path: str | Path, metrics: dict[str, Any]) -> tuple[Path, Path]:
    """The numbers-only metrics JSON and its provenance file beside it (as ``teachclip
    evaluate`` writes them), sorted keys, atomically, no time stamps (DVC sees reruns as
    unchanged)."""
    return write_metrics_files(path, metrics)


def shard_files(out_path: str | Path, world: int) -> list[Path]:
    """The shard files a ``world``-process run leaves beside ``out_path`` (none for 1 process)."""
    return [shard_path(out_path, r, world) for r in range(world)] if world > 1 else []


__all__ = ("ScoreResult", "cache_meta", "score_teacher", "scoring_set",
                          "shard_files", "teacher_test_metrics", "write_metrics")
