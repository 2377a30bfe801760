"""Digests of a teacher cache's data, and the streaming check that recomputes them.

Why per block: the writer produces ``sim``/``relevance``/``frame_mask`` one row block at a time,
so it hashes each block as it writes it (``block_digests`` [n_blocks, 3, 32]: sha256 of the
block's rows of each dataset, C order, as stored). A check then streams the file block by block,
recomputes the three digests and names the dataset, the block and its captions when one differs
— also when the damage slipped past HDF5's per-chunk checksum (a rewrite through h5py recomputes
that checksum). Resuming or sharding changes nothing: a block's digest depends only on its data.
``content_digest`` (attribute) is sha256 over the id lists, ``caption_video`` and every block
digest: one value that identifies the soft labels.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator, Sequence

import h5py
import numpy as np

from pipeline.cache.schema import DIGEST_DATASETS, STREAM_ELEMENTS, block_rows_ranges


def block_digest(sim16: np.ndarray, relevance: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """[3, 32] uint8: sha256 of a block's float16 scores, float32 relevance and bool mask."""
    out = np.empty((len(DIGEST_DATASETS), 32), dtype=np.uint8)
    for i, (arr, dtype) in enumerate(((sim16, np.float16), (relevance, np.float32),
                                      (mask, np.bool_))):
        data = np.ascontiguousarray(arr, dtype=dtype).tobytes()
        out[i] = np.frombuffer(hashlib.sha256(data).digest(), np.uint8)
    return out


def cache_content_digest(caption_ids: Sequence[str], video_ids: Sequence[str],
                         caption_video: np.ndarray, digests: np.ndarray) -> str:
    """sha256 over the ids, ``caption_video`` and every block's digests, in order."""
    h = hashlib.sha256()
    for ids in (caption_ids, video_ids):
        h.update("\n".join(str(i) for i in ids).encode("utf-8"))
        h.update(b"\0")
    h.update(np.ascontiguousarray(caption_video, dtype=np.int64).tobytes())
    h.update(np.ascontiguousarray(digests, dtype=np.uint8).tobytes())
    return h.hexdigest()


def _reason(exc: BaseException) -> str:
    return str(exc).splitlines()[0] if str(exc) else type(exc).__name__


def _captions(ids: Sequence[str], start: int, stop: int) -> str:
    return f"rows {start}..{stop - 1}, captions {ids[start]!r}..{ids[stop - 1]!r}"


def _block_slabs(n_rows: int, n_cols: int, start: int, stop: int, chunk_rows: int
                 ) -> Iterator[tuple[int, int]]:
    """Row slabs of about STREAM_ELEMENTS values covering [start, stop), chunk aligned."""
    step = max(1, STREAM_ELEMENTS // max(1, n_cols))
    step = max(chunk_rows, step - step % max(1, chunk_rows))
    for s0 in range(start, stop, step):
        yield s0, min(s0 + step, stop)


def _damaged(name: str, where: str, exc: BaseException) -> str:
    return (f"{name} in {where} fails its checksum or cannot be read (damaged on disk; HDF5: "
            f"{_reason(exc)})")


def _sim_block(sim_ds: h5py.Dataset, start: int, stop: int) -> tuple[bytes, int | None]:
    """sha256 of ``sim`` rows [start, stop) (streamed) and the first row holding NaN/inf."""
    chunk_rows = sim_ds.chunks[0] if sim_ds.chunks else 1
    hasher = hashlib.sha256()
    first_bad: int | None = None
    for s0, s1 in _block_slabs(*sim_ds.shape, start, stop, chunk_rows):
        slab = sim_ds[s0:s1]
        hasher.update(np.ascontiguousarray(slab).tobytes())
        finite = np.isfinite(slab).all(axis=1)
        if first_bad is None and not finite.all():
            first_bad = s0 + int(np.argmin(finite))
    return hasher.digest(), first_bad


def check_block(handle: h5py.File, block: int, start: int, stop: int, caption_ids: Sequence[str],
                stored: np.ndarray | None) -> list[str]:
    """Problems of one block: unreadable chunks, NaN/inf, digests that differ from ``stored``."""
    where = f"block {block} ({_captions(caption_ids, start, stop)})"
    problems: list[str] = []
    found: dict[str, bytes] = {}
    try:
        found["sim"], first_bad = _sim_block(handle["sim"], start, stop)
        if first_bad is not None:
            problems.append(f"sim has NaN/inf in {where}, first row {first_bad} "
                            f"(caption {caption_ids[first_bad]!r})")
    except OSError as exc:
        problems.append(_damaged("sim", where, exc))
    try:
        rel, mask = handle["relevance"][start:stop], handle["frame_mask"][start:stop]
    except OSError as exc:
        return problems + [_damaged("relevance/frame_mask", where, exc)]
    finite = (np.isfinite(rel) | ~mask.astype(bool)).all(axis=1)
    if not finite.all():
        row = start + int(np.argmin(finite))
        problems.append(f"relevance has NaN/inf in {where}, first row {row} "
                        f"(caption {caption_ids[row]!r})")
    found["relevance"] = hashlib.sha256(np.ascontiguousarray(rel).tobytes()).digest()
    found["frame_mask"] = hashlib.sha256(np.ascontiguousarray(mask).tobytes()).digest()
    if stored is not None:
        for name, want in zip(DIGEST_DATASETS, stored, strict=True):
            if name in found and want.tobytes() != found[name]:
                problems.append(f"{name} in {where} differs from the digest recorded when it was "
                                "written: the data changed on disk")
    return problems


def scan_blocks(handle: h5py.File, blocks: Sequence[int], block_rows: int, *,
                check_digests: bool = True,
                on_progress: Callable[[int], None] | None = None) -> list[str]:
    """Every problem of the given blocks, streamed block by block (rows reported to
    ``on_progress``). Digests are compared when the file has them and ``check_digests``."""
    caption_ids = [str(c) for c in handle["caption_ids"].asstr()[:]]
    n_rows = len(caption_ids)
    stored_all = None
    if check_digests and "block_digests" in handle:
        try:
            stored_all = handle["block_digests"][:]
        except OSError as exc:
            return [f"block_digests cannot be read: {_reason(exc)}"]
    problems: list[str] = []
    for start, stop in block_rows_ranges(blocks, block_rows, n_rows):
        for s0 in range(start, stop, block_rows):
            block = s0 // block_rows
            s1 = min(s0 + block_rows, stop)
            stored = stored_all[block] if stored_all is not None else None
            problems += check_block(handle, block, s0, s1, caption_ids, stored)
            if on_progress is not None:
                on_progress(s1 - s0)
    return problems
