"""The frames stage over several processes or nodes (torchrun): rank shards merged into one file.

Why: decoding is the frames stage's whole cost and needs no communication, so W processes (on
one node or many sharing a filesystem) each decode a share of the videos, like teacher scoring
(:mod:`pipeline.cache.score`). Rank ``r`` of ``W`` takes the chosen videos ``r, r+W, …`` of the
manifest order (strided, so long and short videos spread evenly) and builds them with the
ordinary single-process :func:`~pipeline.data.frames_build.build_frames` into its own shard,
``frames.shard-RRR-of-WWW.h5`` (its tmp file ``….h5.tmp`` resumes a killed rank). After a
barrier, rank 0 writes every row, in manifest order, into the 1-process run's ``<out>.tmp``
through :class:`~pipeline.data.frames_store.FramesWriter` and finalises it, so ``frames.h5`` is
byte-identical to a 1-process run (same rows, per-row digests, ``content_digest``, attrs,
compression), the failure gate applies to all videos at once, and the shards are removed.

A rank whose shard is already finished for the same parameters (a kill hit the merge) does not
decode again. One process (``world == 1``) is exactly :func:`build_frames`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import h5py
import numpy as np
import torch

from pipeline.atomic import atomic_output
from pipeline.data.frames_build import (
    FramesConfig,
    FramesReport,
    build_frames,
    check_failure_gate,
    frames_attrs,
)
from pipeline.data.frames_store import FramesWriter
from pipeline.data.manifest import SPLITS, Manifest
from pipeline.distributed import DistInfo, barrier, gather_no_grad
from pipeline.errors import InputError
from pipeline.h5schema import plain_attrs


def shard_path(out: str | Path, rank: int, world: int) -> Path:
    """``frames.shard-RRR-of-WWW.h5`` beside ``out`` (the name teacher cache shards use)."""
    out = Path(out)
    return out.with_name(f"{out.stem}.shard-{rank:03d}-of-{world:03d}{out.suffix}")


def chosen_ids(manifest: Manifest, splits: Sequence[str]) -> list[str]:
    """Video ids of ``splits`` in manifest order: the row order of frames.h5."""
    for split in splits:
        if split not in SPLITS:
            raise InputError(f"unknown split {split!r}; expected some of {SPLITS}")
    videos = manifest.videos
    return [str(v) for v in videos.loc[videos["split"].isin(list(splits)), "video_id"]]


def share_rows(n_videos: int, rank: int, world: int) -> range:
    """Rows (positions in :func:`chosen_ids`) that rank ``rank`` of ``world`` decodes."""
    return range(rank, n_videos, world)


def rank_manifest(manifest: Manifest, ids: Sequence[str]) -> Manifest:
    """The sub-manifest of the videos ``ids`` (manifest order kept) and their captions."""
    wanted = set(ids)
    videos = manifest.videos[manifest.videos["video_id"].isin(wanted)]
    captions = manifest.captions[manifest.captions["video_id"].isin(wanted)]
    return Manifest(videos, captions, manifest.root)


def _shard_finished(path: Path, ids: Sequence[str], attrs: dict[str, object]) -> bool:
    """True if ``path`` is a finished frames file of exactly these videos and parameters."""
    if not path.is_file():
        return False
    try:
        with h5py.File(path, "r") as handle:
            found = plain_attrs(handle)
            stored = [*handle["video_ids"].asstr()[:], *handle["failed_ids"].asstr()[:]]
    except (OSError, KeyError):
        return False
    same = all(found.get(key) == value for key, value in attrs.items())
    return same and sorted(stored) == sorted(ids)


def build_frames_distributed(
    manifest: Manifest,
    out: str | Path,
    config: FramesConfig,
    dist_info: DistInfo,
    *,
    splits: Sequence[str] = SPLITS,
    workers: int = 2,
    max_failed_fraction: float = 0.05,
    on_progress: Callable[[int], None] | None = None,
) -> FramesReport | None:
    """Build ``out`` with every torchrun rank decoding its share; the report on rank 0 (None on
    the others). One process: :func:`build_frames` itself. ``on_progress`` counts this rank's
    videos (``len(share_rows(...))`` in all)."""
    if not dist_info.enabled:
        return build_frames(manifest, out, config, splits=splits, workers=workers,
                            max_failed_fraction=max_failed_fraction, on_progress=on_progress)
    config.validate()
    out = Path(out)
    ids = chosen_ids(manifest, splits)
    if not ids:
        raise InputError(f"no videos in splits {list(splits)}")
    rank, world = dist_info.rank, dist_info.world_size
    mine = [ids[i] for i in share_rows(len(ids), rank, world)]
    counts = torch.zeros(2, dtype=torch.int64)  # [resumed, decoded now]
    if mine:
        sub = rank_manifest(manifest, mine)
        shard = shard_path(out, rank, world)
        if _shard_finished(shard, mine, frames_attrs(config, sub.digest(), splits)):
            counts[0] = len(mine)
            if on_progress is not None:
                on_progress(len(mine))
        else:
            report = build_frames(sub, shard, config, splits=splits, workers=workers,
                                  max_failed_fraction=1.0, on_progress=on_progress)
            counts[0], counts[1] = report.n_resumed, report.n_decoded_now
    totals = gather_no_grad(counts.reshape(1, 2)).sum(dim=0)
    barrier()
    report = None
    if rank == 0:
        report = merge_shards(manifest, out, config, world, splits=splits,
                              max_failed_fraction=max_failed_fraction)
        report.n_resumed, report.n_decoded_now = int(totals[0]), int(totals[1])
    barrier()
    return report


def _copy_shard(writer: FramesWriter, shard: Path, row_of: dict[str, int]) -> None:
    """Write a finished shard's videos (and failures) at their rows of the merged tmp file."""
    with h5py.File(shard, "r") as handle:
        frames = handle["frames"]
        mask, n_decoded = handle["mask"][:], handle["n_decoded"][:]
        stamps = handle["timestamps"][:]
        buffer = np.empty((1, *frames.shape[1:]), dtype=frames.dtype)
        for j, video_id in enumerate(handle["video_ids"].asstr()[:]):
            frames.read_direct(buffer, np.s_[j:j + 1], np.s_[0:1])
            writer.write(row_of[str(video_id)], buffer[0], mask[j], int(n_decoded[j]),
                         stamps[j])
        failed = handle["failed_ids"].asstr()[:]
        for video_id, reason in zip(failed, handle["failed_reasons"].asstr()[:], strict=True):
            writer.fail(row_of[str(video_id)], str(reason))


def merge_shards(manifest: Manifest, out: str | Path, config: FramesConfig, world: int, *,
                 splits: Sequence[str] = SPLITS, max_failed_fraction: float = 0.05
                 ) -> FramesReport:
    """Rank 0's merge: every shard's rows into the 1-process tmp file, gate, finalise, remove the
    shards. InputError names a missing shard (a rank that did not finish)."""
    out = Path(out)
    ids = chosen_ids(manifest, splits)
    attrs = frames_attrs(config, manifest.digest(), splits)
    shards = [shard_path(out, r, world) for r in range(min(world, len(ids)))]
    for shard in shards:
        if not shard.is_file():
            raise InputError(f"frames shard {shard.name} is missing: its rank did not finish; "
                             "rerun the same torchrun command to decode what is left",
                             file=shard)
    with atomic_output(out, keep_tmp_on_error=True) as tmp:
        writer = FramesWriter.open(tmp, ids, max_frames=config.max_frames, size=config.size,
                                   attrs=attrs, compression=config.compression)
        with writer:
            row_of = {video_id: row for row, video_id in enumerate(ids)}
            for shard in shards:
                _copy_shard(writer, shard, row_of)
            failures = writer.failures()
            check_failure_gate(failures, len(ids), max_failed_fraction, manifest.root)
            digest = writer.finalize(attrs)
    for shard in shards:
        shard.unlink()
    return FramesReport(path=out, n_videos=len(ids), n_ok=len(ids) - len(failures),
                        n_resumed=0, n_decoded_now=0, failures=failures,
                        content_digest=digest)
