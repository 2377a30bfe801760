"""Resumable, shardable writer of a teacher cache (schema: :mod:`pipeline.cache.schema`).

Resume: a writer keeps its progress in ``<final>.tmp`` (``rows_done`` is set only after the
block's data and digests are flushed). Re-opening resumes only if every attribute, id list and
the block layout match; otherwise it raises :class:`MismatchError` (default) or, with
``on_mismatch="restart"``, discards the stale tmp file. A tmp file HDF5 cannot read even without
its file lock (a writer killed mid-flush) holds nothing recoverable and is restarted; one that is
merely locked by another process is someone's live work and is left alone.

Safety (as for frames.h5): the writer holds ``<final>.tmp.lock`` while the tmp is open
(:mod:`pipeline.locks`), keeps a disk reserve so a full disk ends in a clean
:class:`WriteFailedError` that says the tmp was kept (:mod:`pipeline.diskguard`), and
:meth:`finalize` re-reads every block through its checksums and digests before publishing.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from pipeline.atomic import tmp_path_for
from pipeline.cache.integrity import block_digest, cache_content_digest, scan_blocks
from pipeline.cache.schema import (
    CHECKSUM,
    DEFAULT_CHUNK_BYTES,
    DIGEST_DATASETS,
    REQUIRED_DATASETS,
    SCHEMA,
    SCHEMA_VERSION,
    V2_DATASETS,
    CacheIntegrityError,
    CacheMeta,
    check_ids,
    chunk_shape,
    default_block_rows,
    owned_blocks,
    write_small,
)
from pipeline.diskguard import DiskGuard, close_after_failure, reason_of
from pipeline.errors import InputError, MismatchError, WriteFailedError
from pipeline.h5schema import open_tmp_for_resume, plain_attrs
from pipeline.locks import acquire_tmp_lock

_BLOCK_DATASETS = ("sim", "relevance", "frame_mask", "rows_done", "block_digests")


class TeacherCacheWriter:
    """Resumable block writer of one cache file (or one shard of it).

    Usage: ``w = TeacherCacheWriter(final, ...)``; for ``b in w.pending_blocks()``: score rows
    ``w.block_range(b)`` and ``w.write_block(b, ...)``; then ``w.finalize()``. Killing the process
    at any point loses at most the block in flight.
    """

    def __init__(
        self,
        final_path: str | Path,
        *,
        caption_ids: Sequence[str],
        video_ids: Sequence[str],
        caption_video: Sequence[int] | np.ndarray,
        meta: CacheMeta,
        block_rows: int | None = None,
        chunk_bytes: int = DEFAULT_CHUNK_BYTES,
        shard_rank: int = 0,
        shard_world: int = 1,
        shard_assignment: str = "strided",
        on_mismatch: str = "error",
    ) -> None:
        if on_mismatch not in ("error", "restart"):
            raise ValueError(f"on_mismatch must be 'error' or 'restart', got {on_mismatch!r}")
        self.final_path = Path(final_path)
        self.tmp_path = tmp_path_for(self.final_path)
        self.caption_ids = check_ids("caption_ids", caption_ids)
        self.video_ids = check_ids("video_ids", video_ids)
        self.caption_video = np.asarray(caption_video, dtype=np.int64)
        n_c, n_v = len(self.caption_ids), len(self.video_ids)
        if n_c == 0 or n_v == 0:
            raise InputError(f"cannot cache an empty matrix ({n_c} captions × {n_v} videos)")
        if self.caption_video.shape != (n_c,):
            raise ValueError(f"caption_video shape {self.caption_video.shape} != ({n_c},)")
        bad = (self.caption_video < 0) | (self.caption_video >= n_v)
        if bad.any():
            row = int(np.flatnonzero(bad)[0])
            raise InputError(f"caption_video {int(self.caption_video[row])} outside [0, {n_v})",
                             item_id=self.caption_ids[row])
        self.meta = meta
        self.max_frames = int(meta.max_frames)
        self.block_rows = int(block_rows or default_block_rows(n_c, n_v, chunk_bytes))
        if self.block_rows < 1:
            raise ValueError(f"block_rows must be >= 1, got {self.block_rows}")
        self.n_blocks = math.ceil(n_c / self.block_rows)
        self.chunks = chunk_shape(n_c, n_v, self.block_rows, chunk_bytes)
        self.shard_world = int(shard_world)
        self.shard_rank = int(shard_rank)
        self.shard_assignment = shard_assignment
        self._owned = owned_blocks(self.n_blocks, self.shard_rank, self.shard_world,
                                   shard_assignment)
        self.attrs = self._expected_attrs()
        self._lock = acquire_tmp_lock(self.tmp_path)
        self._guard = DiskGuard(self.tmp_path)
        self._broken = False
        try:
            self._guard.acquire()
            self._file = self._open(on_mismatch)
        except BaseException:
            self._guard.release()
            self._lock.release()
            raise
        # Held open for the file's lifetime: see pipeline.diskguard on dropped datasets.
        self._ds = {name: self._file[name] for name in _BLOCK_DATASETS}

    # -------------------------------------------------------------- setup
    def _expected_attrs(self) -> dict[str, Any]:
        attrs: dict[str, Any] = {"schema": SCHEMA, "schema_version": SCHEMA_VERSION}
        attrs.update(self.meta.to_attrs())
        attrs["block_rows"] = self.block_rows
        if self.shard_world > 1:
            attrs.update(layout="shard", shard_rank=self.shard_rank,
                         shard_world=self.shard_world, shard_assignment=self.shard_assignment)
        else:
            attrs["layout"] = "single"
        return attrs

    def _open(self, on_mismatch: str) -> h5py.File:
        if self.tmp_path.exists():
            handle = open_tmp_for_resume(self.tmp_path, "a")
            if handle is None:
                self.tmp_path.unlink()
            else:
                try:
                    problem = self._resume_problem(handle)
                except OSError as exc:  # damaged metadata or progress: start over
                    problem = ("readable content", "intact", reason_of(exc))
                    on_mismatch = "restart"
                if problem is None:
                    return handle
                handle.close()
                if on_mismatch == "error":
                    what, expected, found = problem
                    raise MismatchError(
                        f"resumable cache {what}", expected, found, file=self.tmp_path,
                        expected_in="this run", found_in="the interrupted run's tmp",
                        fix="rerun with the interrupted run's teacher, data and settings to "
                            "resume it, or delete the tmp file to start over")
                self.tmp_path.unlink()
        return self._create()

    def _resume_problem(self, handle: h5py.File) -> tuple[str, Any, Any] | None:
        """First disagreement between the tmp file and this writer's configuration, or None."""
        found = plain_attrs(handle)
        for key, value in self.attrs.items():
            if found.get(key) != value:
                return key, value, found.get(key)
        for name in REQUIRED_DATASETS + V2_DATASETS:
            if name not in handle:
                return f"dataset {name}", "present", "missing"
        if list(handle["caption_ids"].asstr()[:]) != self.caption_ids:
            return "caption_ids", f"{len(self.caption_ids)} ids", "different ids"
        if list(handle["video_ids"].asstr()[:]) != self.video_ids:
            return "video_ids", f"{len(self.video_ids)} ids", "different ids"
        if not np.array_equal(handle["caption_video"][:], self.caption_video):
            return "caption_video", "same values", "different values"
        shapes = {"sim": (len(self.caption_ids), len(self.video_ids)),
                  "relevance": (len(self.caption_ids), self.max_frames),
                  "rows_done": (self.n_blocks,)}
        for name, shape in shapes.items():
            if handle[name].shape != shape:
                return f"{name} shape", shape, handle[name].shape
        handle["rows_done"][:]  # progress flags must pass their checksum (OSError otherwise)
        return None

    def _create(self) -> h5py.File:
        try:
            handle = h5py.File(self.tmp_path, "w")
            handle.attrs.update(self.attrs)
            write_small(handle, self.caption_ids, self.video_ids, self.caption_video)
            create_block_datasets(handle, len(self.caption_ids), len(self.video_ids),
                                  self.max_frames, self.block_rows, self.chunks)
            handle.flush()
        except (OSError, RuntimeError) as exc:
            self._guard.release()
            self.tmp_path.unlink(missing_ok=True)
            raise WriteFailedError(f"cannot create the tmp file: {reason_of(exc)}",
                                   file=self.tmp_path, kept=False) from None
        return handle

    # -------------------------------------------------------------- writing
    def block_range(self, block_index: int) -> tuple[int, int]:
        """[start, stop) caption rows of a block."""
        if not 0 <= block_index < self.n_blocks:
            raise IndexError(f"block {block_index} outside [0, {self.n_blocks})")
        start = block_index * self.block_rows
        return start, min(start + self.block_rows, len(self.caption_ids))

    def owned_blocks(self) -> list[int]:
        """All blocks this writer (shard) is responsible for."""
        return list(self._owned)

    def pending_blocks(self) -> list[int]:
        """Owned blocks not yet written (in ascending order)."""
        done = self._ds["rows_done"][:]
        return [b for b in self._owned if not done[b]]

    def write_block(self, block_index: int, sim_rows: np.ndarray, relevance_rows: np.ndarray,
                    mask_rows: np.ndarray) -> None:
        """Store one block (rows ``block_range(block_index)``) and mark it done after a flush.

        ``sim_rows`` [n, Nv] teacher logits (stored float16), ``relevance_rows`` [n, F]
        pre-softmax frame scores, ``mask_rows`` [n, F] bool. Masked-out relevance is stored as 0
        (teachers may emit -inf there); masked-in values and all scores must be finite.
        """
        if block_index not in self._owned:
            raise ValueError(f"block {block_index} does not belong to shard {self.shard_rank} of "
                             f"{self.shard_world}")
        start, stop = self.block_range(block_index)
        n = stop - start
        n_v, n_f = len(self.video_ids), self.max_frames
        sim = np.asarray(sim_rows, dtype=np.float32)
        rel = np.asarray(relevance_rows, dtype=np.float32)
        mask = np.asarray(mask_rows).astype(bool)
        for name, arr, shape in (("sim_rows", sim, (n, n_v)), ("relevance_rows", rel, (n, n_f)),
                                 ("mask_rows", mask, (n, n_f))):
            if arr.shape != shape:
                raise ValueError(f"block {block_index}: {name} shape {arr.shape} != {shape}")
        with np.errstate(over="ignore"):  # overflow -> inf, reported just below
            sim16 = sim.astype(np.float16)
        bad = ~np.isfinite(sim16).all(axis=1)
        if bad.any():
            row = int(np.flatnonzero(bad)[0])
            raise CacheIntegrityError(
                f"block {block_index}: non-finite teacher score (NaN/inf, or beyond float16 "
                f"range) for caption {self.caption_ids[start + row]!r}")
        empty = ~mask.any(axis=1)
        if empty.any():
            row = int(np.flatnonzero(empty)[0])
            raise CacheIntegrityError(
                f"block {block_index}: frame mask selects no frame for caption "
                f"{self.caption_ids[start + row]!r}")
        rel = np.where(mask, rel, np.float32(0.0))
        bad = ~np.isfinite(rel).all(axis=1)
        if bad.any():
            row = int(np.flatnonzero(bad)[0])
            raise CacheIntegrityError(f"block {block_index}: non-finite relevance for caption "
                                      f"{self.caption_ids[start + row]!r}")
        self._store_block(block_index, start, stop, sim16, rel, mask)

    def _store_block(self, block_index: int, start: int, stop: int, sim16: np.ndarray,
                     rel: np.ndarray, mask: np.ndarray) -> None:
        """Write a checked block with its digests; a failed write closes down cleanly."""
        n_bytes = sim16.nbytes + rel.nbytes + mask.nbytes
        self._guard.check_space(n_bytes, f"block {block_index}")
        ds = self._ds
        try:
            ds["sim"][start:stop] = sim16
            ds["relevance"][start:stop] = rel
            ds["frame_mask"][start:stop] = mask
            ds["block_digests"][block_index] = block_digest(sim16, rel, mask)
            self._file.flush()  # data reaches the file before the progress flag says so
            ds["rows_done"][block_index] = True
            self._file.flush()
        except (OSError, RuntimeError) as exc:
            raise self._write_failed(exc, f"block {block_index}") from None

    def _write_failed(self, exc: BaseException, doing: str) -> WriteFailedError:
        """Close down after a failed write and say what became of the tmp file."""
        self._ds = {}
        self._broken = True
        kept = close_after_failure(self._file, self._guard)
        if kept:
            what = ("the tmp file is kept with every block finished before: free space and rerun "
                    "the same command to resume")
        else:
            self.tmp_path.unlink(missing_ok=True)
            what = "the tmp file could not be closed cleanly and was removed: rerun starts over"
        self._lock.release()
        return WriteFailedError(f"{reason_of(exc)} while writing {doing}; {what}",
                                file=self.tmp_path, kept=kept)

    def finalize(self, on_progress: Callable[[int], None] | None = None) -> Path:
        """Check every owned block is done, re-read it through its checksums and digests (and
        for NaN/inf), record ``content_digest``, then move the tmp file onto the final name.
        ``on_progress`` gets the number of rows just checked."""
        pending = self.pending_blocks()
        if pending:
            raise CacheIntegrityError(
                f"{self.tmp_path}: {len(pending)} block(s) not written yet, first {pending[0]}")
        problems = scan_blocks(self._file, self._owned, self.block_rows, on_progress=on_progress)
        if problems:
            raise CacheIntegrityError(f"{self.tmp_path}: " + "; ".join(problems))
        if self.shard_world == 1:
            digest = cache_content_digest(self.caption_ids, self.video_ids, self.caption_video,
                                          self._ds["block_digests"][:])
            try:
                self._file.attrs["content_digest"] = digest
                self._file.flush()
            except (OSError, RuntimeError) as exc:
                raise self._write_failed(exc, "the content digest") from None
        self.close(keep_lock=True)
        os.replace(self.tmp_path, self.final_path)
        self._lock.release()
        return self.final_path

    def close(self, keep_lock: bool = False) -> None:
        """Close without finalizing (progress stays in the tmp file for a later resume)."""
        self._ds = {}
        if not self._broken and self._file.id.valid:
            self._file.close()
        self._guard.release()
        if not keep_lock:
            self._lock.release()

    def __enter__(self) -> TeacherCacheWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()



def create_block_datasets(handle: h5py.File, n_c: int, n_v: int, n_f: int, block_rows: int,
                          sim_chunks: tuple[int, int], *, with_sim: bool = True) -> None:
    """The row-block datasets of a cache (all checksummed), as the writer and a merge create
    them (a virtual merge makes ``sim`` itself, over the shards: ``with_sim=False``)."""
    handle.attrs["checksums"] = "fletcher32"
    if with_sim:
        handle.create_dataset("sim", shape=(n_c, n_v), dtype=np.float16, chunks=sim_chunks,
                              fillvalue=np.float16(np.nan), **CHECKSUM)
    rel_chunk = (min(n_c, block_rows), n_f)
    handle.create_dataset("relevance", shape=(n_c, n_f), dtype=np.float32, chunks=rel_chunk,
                          fillvalue=np.float32(np.nan), **CHECKSUM)
    handle.create_dataset("frame_mask", shape=(n_c, n_f), dtype=bool, chunks=rel_chunk,
                          **CHECKSUM)
    n_blocks = math.ceil(n_c / block_rows)
    handle.create_dataset("rows_done", data=np.zeros(n_blocks, dtype=bool), **CHECKSUM)
    handle.create_dataset("block_digests", shape=(n_blocks, len(DIGEST_DATASETS), 32),
                          dtype=np.uint8, **CHECKSUM)
