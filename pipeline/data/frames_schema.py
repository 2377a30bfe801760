"""``frames.h5`` schema ``teachclip.frames``: names, digests and filters shared by writer, reader
and verifier.

Version 2 (current) adds integrity checks that a shared file needs: every chunked dataset carries
HDF5's ``fletcher32`` per-chunk checksum (after compression, so a flipped byte fails the read of
that chunk instead of decompressing into garbage or a bare "filter returned failure"), and the
per-row sha256 (``row_sha256`` [N, 32] uint8) is kept in the final file, so ``teachclip frames
verify`` recomputes every row from the data and names the first video that differs.
``content_digest`` keeps its version 1 definition (sha256 over ``id \\0 row_sha256`` per row), so a
re-extracted file of the same frames has the same digest and existing caches still match it.
Version 1 files (no checksums, no ``row_sha256``) stay readable; readers warn about them.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Any

import numpy as np

SCHEMA = "teachclip.frames"
SCHEMA_VERSION = 2
#: Versions readers accept (1: written before per-chunk checksums).
READABLE_VERSIONS = (1, 2)
#: Format of the resumable tmp file (part of the resume key: an older tmp is restarted).
TMP_FORMAT = 2
CHUNK_ORIGIN = (0, 0, 0, 0)
#: What every chunked dataset of a version 2 file gets, on top of its compression.
CHECKSUM = {"fletcher32": True}
REEXTRACT = "re-extract it (`teachclip frames`) or fetch a good copy (e.g. `dvc pull`)"


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


def filter_opts(compression: str) -> dict[str, Any]:
    """h5py keyword arguments for the ``frames`` dataset: compression plus the checksum."""
    if compression in ("none", ""):
        return dict(CHECKSUM)
    if compression == "lzf":
        return {"compression": "lzf", **CHECKSUM}
    if compression.startswith("gzip"):
        level = int(compression.split(":", 1)[1]) if ":" in compression else 4
        return {"compression": "gzip", "compression_opts": level, "shuffle": True, **CHECKSUM}
    raise ValueError(f"unknown compression {compression!r}; use none, lzf or gzip[:level]")
