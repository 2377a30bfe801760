"""Resumable writer of ``frames.h5`` (schema: :mod:`pipeline.data.frames_schema`).

The writer works in ``<out>.tmp`` whose rows sit at their *manifest* position (so worker
completion order never matters), with a ``done`` flag and a per-row sha256. A row's data is
flushed before its ``done`` flag (so a crash or a full disk never marks a row done whose frames
did not reach the file). A killed run is continued by reopening the tmp file if its attrs
(parameters, manifest digest, id list) still match; finalisation re-reads every row through its
checksum, compares it with the row's sha256, and only then compacts the successful rows into the
final layout by copying compressed chunks verbatim (no re-encode).

Safety around the tmp (why: it is shared work on a lab's disk): the writer holds
``<out>.tmp.lock`` while the tmp is open (:mod:`pipeline.locks`), deletes a tmp only when HDF5
cannot read it even without its file lock, and a failed write (disk full) ends in
:class:`WriteFailedError` saying whether the tmp was kept for resume (:mod:`pipeline.diskguard`).
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from pipeline.data.frames_schema import (
    CHECKSUM,
    CHUNK_ORIGIN,
    SCHEMA,
    SCHEMA_VERSION,
    TMP_FORMAT,
    content_digest,
    filter_opts,
    ids_digest,
    row_digest,
)
from pipeline.diskguard import DiskGuard, close_after_failure, reason_of
from pipeline.errors import InputError, WriteFailedError
from pipeline.h5schema import open_tmp_for_resume, plain
from pipeline.locks import OutputLock, acquire_tmp_lock

_ROW_DATASETS = ("frames", "mask", "n_decoded", "timestamps", "row_sha256", "done", "failed",
                 "fail_reason")


def _create(tmp_path: Path, video_ids: Sequence[str], key: Mapping[str, Any], max_frames: int,
            size: int, compression: str) -> h5py.File:
    """A fresh tmp file: every row pending, every chunked dataset checksummed."""
    handle = h5py.File(tmp_path, "w")
    n = len(video_ids)
    handle.create_dataset("all_ids", data=np.array(list(video_ids), dtype=object),
                          dtype=h5py.string_dtype())
    handle.create_dataset(
        "frames", shape=(n, max_frames, size, size, 3), dtype=np.uint8,
        chunks=(1, max_frames, size, size, 3), maxshape=(None, max_frames, size, size, 3),
        **filter_opts(compression),
    )
    handle.create_dataset("mask", shape=(n, max_frames), dtype=bool, **CHECKSUM)
    handle.create_dataset("n_decoded", shape=(n,), dtype=np.int32, **CHECKSUM)
    handle.create_dataset("timestamps", shape=(n, max_frames), dtype=np.float32,
                          fillvalue=np.nan, **CHECKSUM)
    handle.create_dataset("row_sha256", shape=(n, 32), dtype=np.uint8, **CHECKSUM)
    handle.create_dataset("done", shape=(n,), dtype=bool, **CHECKSUM)
    handle.create_dataset("failed", shape=(n,), dtype=bool, **CHECKSUM)
    handle.create_dataset("fail_reason", shape=(n,), dtype=h5py.string_dtype())
    for name, value in key.items():
        handle.attrs[name] = value
    handle.flush()
    return handle


def _open_for_resume(tmp_path: Path, key: Mapping[str, Any]) -> tuple[h5py.File | None, str]:
    """(handle, "") when the tmp can be continued, else (None, why it must be restarted).

    An open that fails only because another process holds HDF5's lock on the file raises
    OutputLockedError: that tmp is someone's live work and is never deleted.
    """
    handle = open_tmp_for_resume(tmp_path)
    if handle is None:
        return None, "unreadable (HDF5 cannot open it)"
    try:
        stored = {k: plain(v) for k, v in handle.attrs.items()}
        if all(name in handle for name in _ROW_DATASETS):
            handle["done"][:]  # unreadable progress flags (failed checksum) mean: start over
            if all(stored.get(k) == v for k, v in key.items()):
                return handle, ""
            return _closed(handle), "written with other settings or another manifest"
    except (OSError, KeyError) as exc:
        return _closed(handle), f"unreadable ({reason_of(exc)})"
    return _closed(handle), "not a frames tmp file"


def _closed(handle: h5py.File) -> None:
    handle.close()
    return None


class FramesWriter:
    """Single-process resumable writer of the tmp file; create with :meth:`open`.

    Why rows at manifest position: results arrive from a process pool in any order, but the
    final row order must be deterministic (manifest order minus failures).
    """

    def __init__(self, handle: h5py.File, path: Path, lock: OutputLock, guard: DiskGuard,
                 discarded: str = "") -> None:
        self._f = handle
        self.path = path
        self._lock = lock
        self._guard = guard
        #: Why a previous tmp file was thrown away ("" when none was, or it was resumed).
        self.discarded = discarded
        self._broken = False  # a failed write closed (or gave up on) the handle
        # Held open for the file's lifetime: see pipeline.diskguard on dropped datasets.
        self._ds = {name: handle[name] for name in _ROW_DATASETS}
        self._ids = [str(v) for v in handle["all_ids"].asstr()[:]]
        self._n_done = int(self._ds["done"][:].sum())

    # ------------------------------------------------------------------ open / resume
    @classmethod
    def open(
        cls,
        tmp_path: str | Path,
        video_ids: Sequence[str],
        *,
        max_frames: int,
        size: int,
        attrs: Mapping[str, Any],
        compression: str = "lzf",
    ) -> FramesWriter:
        """Resume ``tmp_path`` if it was written for the same ids/attrs, else start it afresh."""
        tmp_path = Path(tmp_path)
        key = {**{k: plain(v) for k, v in attrs.items()}, "ids_digest": ids_digest(video_ids),
               "compression": compression, "max_frames": max_frames, "size": size,
               "tmp_format": TMP_FORMAT}
        filter_opts(compression)  # unknown compression: ValueError before anything is touched
        lock = acquire_tmp_lock(tmp_path)
        guard = DiskGuard(tmp_path)
        try:
            guard.acquire()
            handle, discarded = None, ""
            if tmp_path.exists():
                handle, discarded = _open_for_resume(tmp_path, key)
                if handle is None:
                    tmp_path.unlink()
            if handle is None:
                try:
                    handle = _create(tmp_path, video_ids, key, max_frames, size, compression)
                except (OSError, RuntimeError) as exc:
                    close_after_failure(None, guard)
                    tmp_path.unlink(missing_ok=True)
                    raise WriteFailedError(f"cannot create the tmp file: {reason_of(exc)}",
                                           file=tmp_path, kept=False) from None
            return cls(handle, tmp_path, lock, guard, discarded)
        except BaseException:
            guard.release()
            lock.release()
            raise

    # ------------------------------------------------------------------ progress
    @property
    def n_rows(self) -> int:
        return len(self._ids)

    def pending_rows(self) -> list[int]:
        """Rows still to decode: never written, or failed before (failures are retried)."""
        return [int(i) for i in np.flatnonzero(~self._ds["done"][:])]

    def write(self, row: int, frames: np.ndarray, mask: np.ndarray, n_decoded: int,
              timestamps: np.ndarray | None = None) -> None:
        """Store one successful video at its manifest row and mark it done (flushed).

        ``timestamps`` (seconds of each sampled frame from the clip start, NaN for padding) let
        later stages relate frames to annotated segments.
        """
        doing = f"video {self._ids[row]!r}"
        self._guard.check_space(int(np.asarray(frames).nbytes) + (64 << 10), doing)
        ds = self._ds
        try:
            ds["frames"][row] = frames
            ds["mask"][row] = mask
            ds["n_decoded"][row] = n_decoded
            if timestamps is not None:
                ds["timestamps"][row] = timestamps
            ds["row_sha256"][row] = np.frombuffer(row_digest(frames, mask), np.uint8)
            ds["failed"][row] = False
            ds["fail_reason"][row] = ""
            self._f.flush()  # the frames reach the file before the flag that says so
            ds["done"][row] = True
            self._f.flush()
        except (OSError, RuntimeError) as exc:
            raise self._write_failed(exc, doing) from None
        self._n_done += 1

    def fail(self, row: int, reason: str) -> None:
        """Record a failed video (kept pending, so a later resume retries it)."""
        try:
            self._ds["failed"][row] = True
            self._ds["fail_reason"][row] = reason
            self._f.flush()
        except (OSError, RuntimeError) as exc:
            raise self._write_failed(exc, f"video {self._ids[row]!r}") from None

    def failures(self) -> list[tuple[str, str]]:
        """(video_id, reason) of rows that failed and are not done, in manifest order."""
        failed = self._ds["failed"][:] & ~self._ds["done"][:]
        reasons = self._ds["fail_reason"].asstr()[:]
        return [(self._ids[i], str(reasons[i])) for i in np.flatnonzero(failed)]

    def _write_failed(self, exc: BaseException, doing: str) -> WriteFailedError:
        """Close down after a failed write and say what became of the tmp file."""
        self._ds = {}
        kept = close_after_failure(self._f, self._guard)
        self._broken = True
        if kept:
            what = (f"the tmp file is kept with {self._n_done} of {self.n_rows} videos done: "
                    "free space and rerun the same command to resume")
        else:
            self.path.unlink(missing_ok=True)
            what = "the tmp file could not be closed cleanly and was removed: rerun starts over"
        self._lock.release()
        return WriteFailedError(f"{reason_of(exc)} while writing {doing}; {what}",
                                file=self.path, kept=kept)

    def close(self) -> None:
        """Close the tmp (progress stays for a later resume), drop the reserve and the lock."""
        self._ds = {}
        if not self._broken and self._f.id.valid:
            self._f.close()
        self._guard.release()
        self._lock.release()

    def __enter__(self) -> FramesWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ finalise
    def finalize(self, final_attrs: Mapping[str, Any], final: str | Path | None = None) -> str:
        """Check, compact and publish the done rows; return the content digest.

        The result replaces the tmp file, or with ``final`` is moved straight onto ``final`` (the
        lock is held until it is there, so no second run can take the finished tmp for a stale
        one). Rows that are neither done nor failed are a bug in the caller (it must process
        every pending row first), so they raise instead of being silently dropped.
        """
        done, failed = self._ds["done"][:], self._ds["failed"][:]
        missing = np.flatnonzero(~done & ~failed)
        if len(missing):
            raise RuntimeError(f"{len(missing)} rows were never processed")
        keep = np.flatnonzero(done)
        ids = [self._ids[i] for i in keep]
        shas = self._ds["row_sha256"][:]
        self._check_rows(keep, shas)
        digest = content_digest(ids, [shas[i].tobytes() for i in keep])
        compact = self.path.with_name(self.path.name + ".compact")
        self._guard.check_space(os.path.getsize(self.path), "the final file")
        dst: h5py.File | None = None
        try:
            dst = h5py.File(compact, "w")
            self._write_final(dst, keep, ids, shas, final_attrs, digest)
            dst.close()
        except (OSError, RuntimeError) as exc:
            raise self._compact_failed(dst, compact, exc) from None
        self.close()
        os.replace(compact, final if final is not None else self.path)
        if final is not None:
            self.path.unlink(missing_ok=True)
        return digest

    def _check_rows(self, keep: np.ndarray, shas: np.ndarray) -> None:
        """Re-read every done row through its checksum and compare it with its sha256; damaged
        rows are marked pending again (a rerun decodes them anew) and reported."""
        frames = self._ds["frames"]
        try:
            mask = self._ds["mask"][:]
        except OSError as exc:
            raise InputError(f"the tmp file's frame masks are damaged ({reason_of(exc)}): delete "
                             "it and rerun", file=self.path) from None
        buffer = np.empty((1, *frames.shape[1:]), dtype=np.uint8)
        bad: list[int] = []
        for row in keep.tolist():
            try:
                frames.read_direct(buffer, np.s_[row:row + 1], np.s_[0:1])
            except OSError:
                bad.append(row)
                continue
            if row_digest(buffer[0], mask[row]) != shas[row].tobytes():
                bad.append(row)
        if not bad:
            return
        try:
            for row in bad:
                self._ds["done"][row] = False
            self._f.flush()
        except (OSError, RuntimeError) as exc:
            raise self._write_failed(exc, "progress flags") from None
        raise InputError(
            f"{len(bad)} video(s) in the tmp file changed on disk since they were decoded "
            f"(first: {self._ids[bad[0]]!r}); they are marked for decoding again: rerun the same "
            "command", file=self.path)

    def _write_final(self, dst: h5py.File, keep: np.ndarray, ids: list[str], shas: np.ndarray,
                     final_attrs: Mapping[str, Any], digest: str) -> None:
        """The final layout (schema version 2), chunks copied verbatim with their checksums."""
        src, frames = self._f, self._ds["frames"]
        _, f, h, w, c = frames.shape
        string = h5py.string_dtype()
        dst.create_dataset("video_ids", data=np.array(ids, dtype=object), dtype=string)
        out = dst.create_dataset(
            "frames", shape=(len(keep), f, h, w, c), dtype=np.uint8, chunks=frames.chunks,
            maxshape=(None, f, h, w, c), compression=frames.compression,
            compression_opts=frames.compression_opts, shuffle=frames.shuffle, **CHECKSUM)
        for new_row, old_row in enumerate(keep):
            filter_mask, chunk = frames.id.read_direct_chunk((int(old_row), *CHUNK_ORIGIN))
            out.id.write_direct_chunk((new_row, *CHUNK_ORIGIN), chunk, filter_mask)
        for name in ("mask", "n_decoded", "timestamps"):
            dst.create_dataset(name, data=self._ds[name][:][keep], **CHECKSUM)
        dst.create_dataset("row_sha256", data=shas[keep].reshape(len(keep), 32), **CHECKSUM)
        failures = self.failures()
        dst.create_dataset("failed_ids", data=np.array([i for i, _ in failures], dtype=object),
                           dtype=string)
        dst.create_dataset("failed_reasons", data=np.array([r for _, r in failures],
                                                           dtype=object), dtype=string)
        for name, value in final_attrs.items():
            dst.attrs[name] = plain(value)
        dst.attrs["schema"] = SCHEMA
        dst.attrs["schema_version"] = SCHEMA_VERSION
        dst.attrs["compression"] = src.attrs["compression"]
        dst.attrs["checksums"] = "fletcher32"
        dst.attrs["content_digest"] = digest

    def _compact_failed(self, dst: h5py.File | None, compact: Path, exc: BaseException
                        ) -> WriteFailedError:
        """The final file could not be written: drop it, keep the (complete) tmp for a rerun."""
        close_after_failure(dst, self._guard)  # reserve first, so the close has room
        compact.unlink(missing_ok=True)
        n_done = self._n_done
        self.close()
        return WriteFailedError(
            f"{reason_of(exc)} while writing the final file; the partial {compact.name} was "
            f"removed and the tmp file is kept with all {n_done} decoded videos: free space and "
            "rerun the same command (only this last step is redone)", file=self.path, kept=True)
