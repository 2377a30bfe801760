"""Checking a whole ``frames.h5`` from its data (``teachclip frames verify``).

Why recompute: ``content_digest`` is an attribute written at finalisation; comparing it with
itself proves nothing. Verification reads every row through HDF5's per-chunk checksum, hashes
the decoded frames and mask exactly as the writer did, compares each row with the ``row_sha256``
stored at extraction (version 2) and rebuilds ``content_digest`` from the recomputed rows, so a
flipped byte is found whether or not the file is compressed, and the damaged videos are named.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import h5py
import numpy as np

from pipeline.data.frames_schema import (
    READABLE_VERSIONS,
    REEXTRACT,
    SCHEMA,
    content_digest,
    row_digest,
)
from pipeline.errors import TeachclipError
from pipeline.h5schema import open_checked, plain_attrs

REQUIRED = ("video_ids", "frames", "mask", "n_decoded", "failed_ids", "failed_reasons")
#: Damaged videos named one by one before the rest are only counted.
SHOWN = 10


def verify_frames(path: str | Path, on_progress: Callable[[int], None] | None = None
                  ) -> list[str]:
    """Every problem found in a frames file (empty list = its data is what was extracted).

    ``on_progress`` gets the number of videos just checked.
    """
    path = Path(path)
    try:
        handle = open_checked(path, schema=SCHEMA, version=READABLE_VERSIONS, what="frames file",
                              fix=REEXTRACT)
    except TeachclipError as exc:
        return [str(exc)]
    with handle:
        missing = [name for name in REQUIRED if name not in handle]
        if missing:
            return [f"missing dataset(s): {', '.join(missing)}"]
        attrs = plain_attrs(handle)
        problems: list[str] = []
        if attrs.get("schema_version") == 1:
            problems.append("written before per-chunk checksums and per-video digests (schema "
                            "version 1): only the whole file's digest can be checked, damaged "
                            f"videos cannot be named; {REEXTRACT}")
        ids = [str(v) for v in handle["video_ids"].asstr()[:]]
        small, small_problems = _small_datasets(handle, len(ids))
        problems += small_problems
        if "mask" not in small:
            return problems
        digests, row_problems = _row_digests(handle, ids, small["mask"], small.get("row_sha256"),
                                             on_progress)
        problems += row_problems
        if not row_problems and content_digest(ids, digests) != attrs.get("content_digest"):
            problems.append("content_digest differs from the digest of the stored frames: the "
                            f"data changed after extraction; {REEXTRACT}")
    return problems


def _small_datasets(handle: h5py.File, n: int) -> tuple[dict[str, np.ndarray], list[str]]:
    """Every per-video dataset read whole (checksums verified), with shape problems."""
    names = ["mask", "n_decoded", "timestamps"]
    if "row_sha256" in handle:
        names.append("row_sha256")
    out: dict[str, np.ndarray] = {}
    problems = []
    for name in names:
        if name not in handle:
            continue
        try:
            data = handle[name][:]
        except OSError as exc:
            problems.append(f"dataset {name!r} is damaged ({_reason(exc)}); {REEXTRACT}")
            continue
        if data.shape[0] != n:
            problems.append(f"dataset {name!r} has {data.shape[0]} rows for {n} video ids")
            continue
        out[name] = data
    if handle["frames"].shape[0] != n:
        problems.append(f"dataset 'frames' has {handle['frames'].shape[0]} rows for {n} video ids")
        out.pop("mask", None)
    return out, problems


def _row_digests(handle: h5py.File, ids: list[str], mask: np.ndarray,
                 stored: np.ndarray | None, on_progress: Callable[[int], None] | None
                 ) -> tuple[list[bytes], list[str]]:
    """Each row's recomputed digest, and the videos whose chunk or digest is bad."""
    frames = handle["frames"]
    buffer = np.empty((1, *frames.shape[1:]), dtype=np.uint8)
    digests: list[bytes] = []
    unreadable: list[str] = []
    changed: list[str] = []
    for row, video_id in enumerate(ids):
        try:
            frames.read_direct(buffer, np.s_[row:row + 1], np.s_[0:1])
        except OSError as exc:
            unreadable.append(f"{video_id!r} (row {row}: {_reason(exc)})")
            digests.append(b"")
            continue
        digest = row_digest(buffer[0], mask[row])
        digests.append(digest)
        if stored is not None and digest != stored[row].tobytes():
            changed.append(f"{video_id!r} (row {row})")
        if on_progress is not None:
            on_progress(1)
    problems = []
    for what, videos in (("fail their chunk checksum", unreadable),
                         ("differ from the digest stored at extraction", changed)):
        if videos:
            more = f" and {len(videos) - SHOWN} more" if len(videos) > SHOWN else ""
            problems.append(f"dataset 'frames': {len(videos)} video(s) {what}: "
                            f"{', '.join(videos[:SHOWN])}{more}; {REEXTRACT}")
    return digests, problems


def _reason(exc: BaseException) -> str:
    return str(exc).splitlines()[0] if str(exc) else type(exc).__name__
