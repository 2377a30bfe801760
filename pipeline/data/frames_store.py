"""``frames.h5``: every video's sampled frames, decoded once (schema ``teachclip.frames`` v2).

Final file (artifacts §4): ``video_ids`` (utf-8, manifest order minus failures), ``frames`` uint8
[N, F, H, W, 3] chunked one video per chunk, ``mask`` bool [N, F], ``n_decoded`` int32 [N],
``timestamps`` float32 [N, F], ``row_sha256`` uint8 [N, 32] (v2), ``failed_ids`` /
``failed_reasons``; attrs ``schema``, ``schema_version``, the sampling and decoder provenance
given by the stage, and ``content_digest``. Checksums and versions: :mod:`frames_schema`; the
resumable writer: :mod:`frames_writer` (re-exported here); the check of a whole file:
:mod:`frames_verify`.

The reader turns a chunk that fails its checksum into an ``Error:`` naming the file, the dataset
and the video, instead of h5py's "Can't synchronously read data (filter returned failure)".
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from pipeline.data.frames_schema import (
    READABLE_VERSIONS,
    REEXTRACT,
    SCHEMA,
    SCHEMA_VERSION,
    content_digest,
    ids_digest,
    row_digest,
)
from pipeline.data.frames_writer import FramesWriter
from pipeline.errors import DataIntegrityError, InputError, UncheckedFileWarning
from pipeline.h5schema import open_checked, plain_attrs

__all__ = ["SCHEMA", "SCHEMA_VERSION", "FramesReader", "FramesWriter", "check_resolution",
           "content_digest", "ids_digest", "row_digest"]


def damaged(path: Path, dataset: str, where: str, exc: BaseException) -> DataIntegrityError:
    """The error for a read that failed inside a frames file (checksum, filter, truncation)."""
    reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return DataIntegrityError(
        f"{path}: dataset {dataset!r}, {where}: the stored data is damaged ({reason}); run "
        f"`teachclip frames verify {path}` to list every damaged video, then {REEXTRACT}")


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
        with open_checked(self.path, schema=SCHEMA, version=READABLE_VERSIONS,
                          what="frames file", fix=REEXTRACT) as handle:
            self.video_ids: list[str] = [str(v) for v in handle["video_ids"].asstr()[:]]
            self.attrs: dict[str, Any] = plain_attrs(handle)
            _, self.max_frames, self.height, self.width, _ = handle["frames"].shape
            self.failed_ids = [str(v) for v in handle["failed_ids"].asstr()[:]]
            self.failed_reasons = [str(v) for v in handle["failed_reasons"].asstr()[:]]
        if self.attrs.get("schema_version") == 1:
            warnings.warn(
                f"{self.path} was written before per-chunk checksums (frames schema version 1): "
                f"damage to it would go unnoticed; {REEXTRACT} to get a checked file",
                UncheckedFileWarning, stacklevel=2)
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
            try:
                dataset.read_direct(frames, np.s_[row:row + 1], np.s_[slot:slot + 1])
            except OSError as exc:
                raise damaged(self.path, "frames", f"video {self.video_ids[row]!r} (row {row})",
                              exc) from None
        mask = self._read_small(handle, "mask", unique)
        return frames[inverse], mask[inverse]

    def _read_small(self, handle: h5py.File, name: str, rows: np.ndarray | None) -> np.ndarray:
        """Rows of a small per-video dataset (all when ``rows`` is None), errors named."""
        try:
            return handle[name][:] if rows is None else handle[name][rows]
        except OSError as exc:
            first = "all rows" if rows is None or not len(rows) else (
                f"rows {int(rows[0])}..{int(rows[-1])} (videos {self.video_ids[int(rows[0])]!r}"
                f"..{self.video_ids[int(rows[-1])]!r})")
            raise damaged(self.path, name, first, exc) from None

    def timestamps(self, rows: Sequence[int] | np.ndarray | None = None) -> np.ndarray:
        """Seconds of each sampled frame from the clip start [n, F] (NaN for padding)."""
        handle = self._handle()
        if rows is None:
            return self._read_small(handle, "timestamps", None)
        index = np.asarray(rows, dtype=np.int64).reshape(-1)
        unique, inverse = np.unique(index, return_inverse=True)
        return self._read_small(handle, "timestamps", unique)[inverse]

    def load_all(self) -> FramesReader:
        """Keep every frame in RAM (small datasets): later reads never touch the file."""
        frames, mask = self.read(np.arange(len(self.video_ids)))
        self._ram = (frames, mask)
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
