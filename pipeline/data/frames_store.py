"""``frames.h5``: every video's sampled frames, decoded once (schema ``teachclip.frames`` v1).

Final file (artifacts §4): ``video_ids`` (utf-8, manifest order minus failures), ``frames`` uint8
[N, F, H, W, 3] chunked one video per chunk, ``mask`` bool [N, F], ``n_decoded`` int32 [N],
``failed_ids`` / ``failed_reasons``; attrs ``schema``, ``schema_version``, the sampling and decoder
provenance given by the stage, and ``content_digest``.

Resumability: the writer works in ``<out>.tmp`` whose rows sit at their *manifest* position (so
worker completion order never matters), with a ``done`` flag and a per-row sha256 that are
flushed after every video. A killed run is continued by reopening the tmp file if its attrs
(parameters, manifest digest, id list) still match; finalisation compacts the successful rows
into the final layout by copying compressed chunks verbatim (no re-encode) and derives
``content_digest`` from the stored per-row digests, so a resumed run yields the same digest.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from pipeline.errors import InputError
from pipeline.h5schema import open_checked, plain, plain_attrs

SCHEMA = "teachclip.frames"
SCHEMA_VERSION = 1
_CHUNK_ORIGIN = (0, 0, 0, 0)


def row_digest(frames: np.ndarray, mask: np.ndarray) -> bytes:
    """sha256 of one row's frames and mask bytes (C order): the unit of ``content_digest``."""
    h = hashlib.sha256()
    h.update(np.ascontiguousarray(frames, dtype=np.uint8).tobytes())
    h.update(np.ascontiguousarray(mask, dtype=bool).tobytes())
    return h.digest()


def content_digest(video_ids: Sequence[str], row_digests: Sequence[bytes]) -> str:
    """sha256 over ``id \\0 row_digest`` for each row in order: identifies the frames content."""
    h = hashlib.sha256()
    for video_id, digest in zip(video_ids, row_digests, strict=True):
        h.update(video_id.encode("utf-8"))
        h.update(b"\0")
        h.update(digest)
    return h.hexdigest()


def ids_digest(video_ids: Sequence[str]) -> str:
    """sha256 of the ordered id list: part of the resume key of a tmp file."""
    return hashlib.sha256("\n".join(video_ids).encode("utf-8")).hexdigest()


def _filter_opts(compression: str) -> dict[str, Any]:
    if compression in ("none", ""):
        return {}
    if compression == "lzf":
        return {"compression": "lzf"}
    if compression.startswith("gzip"):
        level = int(compression.split(":", 1)[1]) if ":" in compression else 4
        return {"compression": "gzip", "compression_opts": level, "shuffle": True}
    raise ValueError(f"unknown compression {compression!r}; use none, lzf or gzip[:level]")


class FramesWriter:
    """Single-process resumable writer of the tmp file; create with :meth:`open`.

    Why rows at manifest position: results arrive from a process pool in any order, but the
    final row order must be deterministic (manifest order minus failures).
    """

    def __init__(self, handle: h5py.File, path: Path) -> None:
        self._f = handle
        self.path = path

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
               "compression": compression, "max_frames": max_frames, "size": size}
        if tmp_path.exists():
            handle = cls._try_resume(tmp_path, key)
            if handle is not None:
                return cls(handle, tmp_path)
            tmp_path.unlink()
        handle = h5py.File(tmp_path, "w")
        n = len(video_ids)
        handle.create_dataset("all_ids", data=np.array(list(video_ids), dtype=object),
                              dtype=h5py.string_dtype())
        handle.create_dataset(
            "frames", shape=(n, max_frames, size, size, 3), dtype=np.uint8,
            chunks=(1, max_frames, size, size, 3), maxshape=(None, max_frames, size, size, 3),
            **_filter_opts(compression),
        )
        handle.create_dataset("mask", shape=(n, max_frames), dtype=bool)
        handle.create_dataset("n_decoded", shape=(n,), dtype=np.int32)
        handle.create_dataset("timestamps", shape=(n, max_frames), dtype=np.float32,
                              fillvalue=np.nan)
        handle.create_dataset("row_sha256", shape=(n, 32), dtype=np.uint8)
        handle.create_dataset("done", shape=(n,), dtype=bool)
        handle.create_dataset("failed", shape=(n,), dtype=bool)
        handle.create_dataset("fail_reason", shape=(n,), dtype=h5py.string_dtype())
        for name, value in key.items():
            handle.attrs[name] = value
        handle.flush()
        return cls(handle, tmp_path)

    @staticmethod
    def _try_resume(tmp_path: Path, key: Mapping[str, Any]) -> h5py.File | None:
        """Open a tmp file for appending if its resume key matches; None if stale or unreadable."""
        try:
            handle = h5py.File(tmp_path, "r+")
        except OSError:  # a kill during a metadata write can leave an unreadable file
            return None
        try:
            stored = {k: plain(v) for k, v in handle.attrs.items()}
            if "done" in handle and all(stored.get(k) == v for k, v in key.items()):
                return handle
        except (OSError, KeyError):
            pass
        handle.close()
        return None

    # ------------------------------------------------------------------ progress
    @property
    def n_rows(self) -> int:
        return int(self._f["done"].shape[0])

    def pending_rows(self) -> list[int]:
        """Rows still to decode: never written, or failed before (failures are retried)."""
        return [int(i) for i in np.flatnonzero(~self._f["done"][:])]

    def write(self, row: int, frames: np.ndarray, mask: np.ndarray, n_decoded: int,
              timestamps: np.ndarray | None = None) -> None:
        """Store one successful video at its manifest row and mark it done (flushed).

        ``timestamps`` (seconds of each sampled frame from the clip start, NaN for padding) let
        later stages relate frames to annotated segments.
        """
        self._f["frames"][row] = frames
        self._f["mask"][row] = mask
        self._f["n_decoded"][row] = n_decoded
        if timestamps is not None:
            self._f["timestamps"][row] = timestamps
        self._f["row_sha256"][row] = np.frombuffer(row_digest(frames, mask), np.uint8)
        self._f["failed"][row] = False
        self._f["fail_reason"][row] = ""
        self._f["done"][row] = True
        self._f.flush()

    def fail(self, row: int, reason: str) -> None:
        """Record a failed video (kept pending, so a later resume retries it)."""
        self._f["failed"][row] = True
        self._f["fail_reason"][row] = reason
        self._f.flush()

    def failures(self) -> list[tuple[str, str]]:
        """(video_id, reason) of rows that failed and are not done, in manifest order."""
        ids = self._f["all_ids"].asstr()[:]
        failed = self._f["failed"][:] & ~self._f["done"][:]
        reasons = self._f["fail_reason"].asstr()[:]
        return [(str(ids[i]), str(reasons[i])) for i in np.flatnonzero(failed)]

    def close(self) -> None:
        if self._f.id.valid:
            self._f.close()

    def __enter__(self) -> FramesWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ finalise
    def finalize(self, final_attrs: Mapping[str, Any]) -> str:
        """Compact done rows into the final layout, replace the tmp file with it; return digest.

        Rows that are neither done nor failed are a bug in the caller (it must process every
        pending row first), so they raise instead of being silently dropped.
        """
        src = self._f
        done = src["done"][:]
        failed = src["failed"][:]
        missing = np.flatnonzero(~done & ~failed)
        if len(missing):
            raise RuntimeError(f"{len(missing)} rows were never processed")
        keep = np.flatnonzero(done)
        all_ids = src["all_ids"].asstr()[:]
        ids = [str(all_ids[i]) for i in keep]
        shas = src["row_sha256"][:]
        digest = content_digest(ids, [shas[i].tobytes() for i in keep])
        failures = self.failures()
        compact = self.path.with_name(self.path.name + ".compact")
        frames = src["frames"]
        _, f, h, w, c = frames.shape
        with h5py.File(compact, "w") as dst:
            dst.create_dataset("video_ids", data=np.array(ids, dtype=object),
                               dtype=h5py.string_dtype())
            out = dst.create_dataset(
                "frames", shape=(len(keep), f, h, w, c), dtype=np.uint8,
                chunks=frames.chunks, maxshape=(None, f, h, w, c),
                compression=frames.compression, compression_opts=frames.compression_opts,
                shuffle=frames.shuffle,
            )
            for new_row, old_row in enumerate(keep):
                filter_mask, chunk = frames.id.read_direct_chunk((int(old_row), *_CHUNK_ORIGIN))
                out.id.write_direct_chunk((new_row, *_CHUNK_ORIGIN), chunk, filter_mask)
            dst.create_dataset("mask", data=src["mask"][:][keep])
            dst.create_dataset("n_decoded", data=src["n_decoded"][:][keep])
            dst.create_dataset("timestamps", data=src["timestamps"][:][keep])
            dst.create_dataset("failed_ids", data=np.array([i for i, _ in failures], dtype=object),
                               dtype=h5py.string_dtype())
            dst.create_dataset("failed_reasons",
                               data=np.array([r for _, r in failures], dtype=object),
                               dtype=h5py.string_dtype())
            for name, value in final_attrs.items():
                dst.attrs[name] = plain(value)
            dst.attrs["schema"] = SCHEMA
            dst.attrs["schema_version"] = SCHEMA_VERSION
            dst.attrs["compression"] = src.attrs["compression"]
            dst.attrs["content_digest"] = digest
        self.close()
        os.replace(compact, self.path)
        return digest


def check_resolution(height: int, width: int, image_size: int, *, model: str,
                     file: str | Path | None = None) -> None:
    """Refuse frames whose size is not the model's image size, naming both and the two fixes.

    Why here and early: without a params file ``teachclip frames`` decodes at 224 px (ViT-B/32)
    while ``--clip tiny`` takes 32 px; the mismatch used to surface as a shape error deep in the
    vision tower, after the data had been loaded.
    """
    if (int(height), int(width)) == (int(image_size), int(image_size)):
        return
    raise InputError(
        f"frames are {height}×{width} px but {model} takes {image_size}×{image_size} images: "
        f"rebuild the frames with `teachclip frames --size {image_size}`, or use a CLIP whose "
        f"image size is {height} (224: ViT-B/32; --clip 'tiny:{{\"image_size\": {height}}}')",
        file=file)


class FramesReader:
    """Read-only view of a finished frames.h5; picklable, opens the file lazily per process.

    Metadata (ids, shapes, attrs) is read once at construction with a short-lived handle; the
    data handle is opened on first :meth:`read` in whichever process calls it (h5py handles must
    not cross fork/spawn), and is reopened if the object finds itself in a new process.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        with open_checked(self.path, schema=SCHEMA, version=SCHEMA_VERSION,
                          what="frames file") as handle:
            self.video_ids: list[str] = [str(v) for v in handle["video_ids"].asstr()[:]]
            self.attrs: dict[str, Any] = plain_attrs(handle)
            _, self.max_frames, self.height, self.width, _ = handle["frames"].shape
            self.failed_ids = [str(v) for v in handle["failed_ids"].asstr()[:]]
            self.failed_reasons = [str(v) for v in handle["failed_reasons"].asstr()[:]]
        self._row = {video_id: i for i, video_id in enumerate(self.video_ids)}
        self._file: h5py.File | None = None
        self._pid: int | None = None
        self._ram: tuple[np.ndarray, np.ndarray] | None = None

    @property
    def digest(self) -> str:
        """The file's ``content_digest`` attr (sha256 over rows; recorded by downstream caches)."""
        return str(self.attrs["content_digest"])

    def __len__(self) -> int:
        return len(self.video_ids)

    def row_of(self, video_id: str) -> int:
        """Row of a video id (KeyError names the id if it is absent, e.g. failed to decode)."""
        try:
            return self._row[video_id]
        except KeyError:
            raise KeyError(f"video id {video_id!r} not in {self.path}") from None

    def _handle(self) -> h5py.File:
        if self._file is None or self._pid != os.getpid():
            self._file = h5py.File(self.path, "r")
            self._pid = os.getpid()
        return self._file

    def read(self, rows: Sequence[int] | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Frames uint8 [n, F, H, W, 3] and mask bool [n, F] for ``rows`` in the order given.

        h5py fancy indexing needs increasing unique indices, so read the sorted unique rows and
        scatter them back (duplicates allowed).
        """
        index = np.asarray(rows, dtype=np.int64).reshape(-1)
        if len(index) and (index.min() < 0 or index.max() >= len(self.video_ids)):
            raise IndexError(f"row out of range [0, {len(self.video_ids)}) in {self.path}")
        if self._ram is not None:
            return self._ram[0][index], self._ram[1][index]
        if len(index) == 0:
            return (np.zeros((0, self.max_frames, self.height, self.width, 3), np.uint8),
                    np.zeros((0, self.max_frames), bool))
        unique, inverse = np.unique(index, return_inverse=True)
        handle = self._handle()
        dataset = handle["frames"]
        # One chunk (= one video) per read_direct: h5py's fancy indexing on this 5-D dataset
        # costs ~100 ms per 224-px video, read_direct ~0.3 ms (bench/train_step.py).
        frames = np.empty((len(unique), *dataset.shape[1:]), dtype=dataset.dtype)
        for slot, row in enumerate(unique.tolist()):
            dataset.read_direct(frames, np.s_[row:row + 1], np.s_[slot:slot + 1])
        mask = handle["mask"][unique]
        return frames[inverse], mask[inverse]

    def timestamps(self, rows: Sequence[int] | np.ndarray | None = None) -> np.ndarray:
        """Seconds of each sampled frame from the clip start [n, F] (NaN for padding)."""
        handle = self._handle()
        if rows is None:
            return handle["timestamps"][:]
        index = np.asarray(rows, dtype=np.int64).reshape(-1)
        unique, inverse = np.unique(index, return_inverse=True)
        return handle["timestamps"][unique][inverse]

    def load_all(self) -> FramesReader:
        """Keep every frame in RAM (small datasets): later reads never touch the file."""
        handle = self._handle()
        self._ram = (handle["frames"][:], handle["mask"][:])
        return self

    def close(self) -> None:
        """Close this process's handle (the object stays usable: it reopens on demand)."""
        if self._file is not None and self._pid == os.getpid():
            self._file.close()
        self._file = None

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_file"] = None
        state["_pid"] = None
        return state
