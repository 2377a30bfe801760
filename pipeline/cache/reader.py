"""Read side of a teacher cache, made for DataLoader workers (schema: ``cache.schema``).

Damage is reported, never trained on: a chunk that fails its checksum while a batch is read
becomes a :class:`CacheIntegrityError` naming the cache, the dataset and the caption, and
:meth:`TeacherCache.check_data` (called by ``student train`` before the first step) re-reads the
whole cache through its checksums and digests and refuses NaN/inf, naming the row.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from pipeline.cache.integrity import scan_blocks
from pipeline.cache.rows import DirectRows, direct_reading_enabled
from pipeline.cache.schema import (
    READABLE_VERSIONS,
    REQUIRED_DATASETS,
    RESCORE,
    SCHEMA,
    STREAM_ELEMENTS,
    V2_DATASETS,
    CacheIntegrityError,
    CacheMeta,
    virtual_sources,
)
from pipeline.errors import InputError, MismatchError, UncheckedFileWarning
from pipeline.h5schema import open_checked, plain_attrs


def _reason(exc: BaseException) -> str:
    return str(exc).splitlines()[0] if str(exc) else type(exc).__name__


class TeacherCache:
    """Read-side view of a cache, made for DataLoader workers.

    Small arrays (ids, ``caption_video``, ``relevance``, ``frame_mask``) are read once in
    ``__init__`` through a short-lived handle; the ``sim`` handle is opened lazily in the process
    that first needs it and dropped on pickling, because h5py handles neither pickle nor survive
    a fork (pytorch#11929). ``load_all=True`` keeps ``sim`` in RAM (float16) when it fits.
    Otherwise rows are read through h5py, each chunk's checksum verified; ``direct=True`` (or
    the environment's ``TEACHCLIP_CACHE_READER=direct``) reads them straight from the file
    (:mod:`pipeline.cache.rows`, faster per row, checksums not verified per read).
    """

    def __init__(self, path: str | Path, *, load_all: bool = False,
                 direct: bool | None = None) -> None:
        self.path = Path(path)
        handle = open_checked(self.path, schema=SCHEMA, version=READABLE_VERSIONS,
                              what="teacher cache", fix=RESCORE)
        with handle:
            attrs = plain_attrs(handle)
            required = REQUIRED_DATASETS + (V2_DATASETS if attrs["schema_version"] >= 2 else ())
            missing = [name for name in required if name not in handle]
            if missing:
                raise InputError(f"teacher cache lacks dataset(s) {missing}", file=self.path)
            done = handle["rows_done"][:].astype(bool)
            if attrs.get("layout") == "shard" or not done.all():
                raise CacheIntegrityError(
                    f"{self.path}: unfinished cache or shard ({int((~done).sum())} of "
                    f"{done.size} blocks missing, layout {attrs.get('layout')!r})")
            for name, resolved in virtual_sources(handle, self.path.parent):
                if not resolved.is_file():
                    raise InputError(f"virtual dataset source {name!r} not found "
                                     f"(expected at {resolved})", file=self.path)
            self.attrs: dict[str, Any] = attrs
            self.caption_ids: list[str] = list(handle["caption_ids"].asstr()[:])
            self.video_ids: list[str] = list(handle["video_ids"].asstr()[:])
            try:
                self.caption_video: np.ndarray = handle["caption_video"][:].astype(np.int64)
                self._relevance: np.ndarray = handle["relevance"][:].astype(np.float32)
                self._mask: np.ndarray = handle["frame_mask"][:].astype(bool)
            except OSError as exc:
                raise CacheIntegrityError(f"{self.path}: the per-caption datasets are damaged "
                                          f"({_reason(exc)}); {RESCORE}") from None
            self.shape: tuple[int, int] = tuple(handle["sim"].shape)  # type: ignore[assignment]
        if attrs["schema_version"] < 2:
            warnings.warn(f"{self.path} was written before checksums (teacher cache schema "
                          "version 1): damage to its soft labels would go unnoticed; rescore "
                          "the teacher to get a checked cache", UncheckedFileWarning,
                          stacklevel=2)
        self._row = {c: i for i, c in enumerate(self.caption_ids)}
        self._col = {v: i for i, v in enumerate(self.video_ids)}
        self._sim_ram: np.ndarray | None = None
        self._file: h5py.File | None = None
        self._pid: int | None = None
        self._direct = direct_reading_enabled() if direct is None else bool(direct)
        self._rows: DirectRows | None = None
        if load_all:
            self.load_all()

    # -------------------------------------------------------------- properties
    @property
    def meta(self) -> CacheMeta:
        return CacheMeta.from_attrs(self.attrs)

    @property
    def F(self) -> int:
        """Frames per video (``max_frames``) the relevance was computed with."""
        return int(self._relevance.shape[1])

    @property
    def L(self) -> int:
        """Words per caption (``max_words``) the teacher encoded."""
        return int(self.attrs["max_words"])

    @property
    def n_captions(self) -> int:
        return len(self.caption_ids)

    @property
    def n_videos(self) -> int:
        return len(self.video_ids)

    # -------------------------------------------------------------- pickling / lazy handle
    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_file"] = None
        state["_pid"] = None
        return state

    def _sim(self) -> h5py.Dataset:
        if self._file is None or self._pid != os.getpid():
            # Chunk cache off: rows are read once per batch, and HDF5 then reads just the
            # requested rows of an (unfiltered) chunk instead of the whole ~1 MiB chunk.
            self._file = h5py.File(self.path, "r", rdcc_nbytes=0)
            self._pid = os.getpid()
        return self._file["sim"]

    def close(self) -> None:
        if self._file is not None and self._pid == os.getpid() and self._file.id.valid:
            self._file.close()
        self._file = None
        if self._rows is not None:
            self._rows.close()

    def _direct_rows(self) -> DirectRows | None:
        """The direct row reader (built once, from this file's chunk table), or None."""
        if self._direct and self._rows is None:
            self._rows = DirectRows.open(self._sim(), self.path)
            self._direct = self._rows is not None
        return self._rows

    def load_all(self, on_progress: Callable[[int], None] | None = None) -> None:
        """Read the whole ``sim`` matrix into RAM (float16: Nc·Nv·2 bytes)."""
        if self._sim_ram is not None:
            return
        ds = self._sim()
        out = np.empty(ds.shape, dtype=np.float16)
        step = max(1, STREAM_ELEMENTS // max(1, ds.shape[1]))
        for s0 in range(0, ds.shape[0], step):
            s1 = min(s0 + step, ds.shape[0])
            try:
                out[s0:s1] = ds[s0:s1]
            except OSError as exc:
                raise self._damaged(s0, s1, exc) from None
            if on_progress is not None:
                on_progress(s1 - s0)
        self._sim_ram = out
        self.close()

    def check_data(self, on_progress: Callable[[int], None] | None = None) -> None:
        """Re-read the whole cache through its checksums and block digests and refuse NaN/inf
        (CacheIntegrityError naming the cache, the block and the caption). Why before training:
        a damaged or non-finite soft label otherwise surfaces steps later as a NaN loss."""
        problems = []
        bad = ~(np.isfinite(self._relevance) | ~self._mask).all(axis=1)
        if bad.any():
            row = int(np.flatnonzero(bad)[0])
            problems.append(f"relevance has NaN/inf in row {row} (caption "
                            f"{self.caption_ids[row]!r})")
        with h5py.File(self.path, "r") as handle:
            block_rows = int(self.attrs.get("block_rows") or max(1, self.n_captions))
            n_blocks = -(-self.n_captions // block_rows)
            problems += scan_blocks(handle, range(n_blocks), block_rows, on_progress=on_progress)
        if problems:
            more = f" (and {len(problems) - 1} more problem(s))" if len(problems) > 1 else ""
            raise CacheIntegrityError(f"{self.path}: {problems[0]}{more}; run `teachclip cache "
                                      f"verify {self.path}` for the full list, then {RESCORE}")

    def _damaged(self, lo: int, hi: int, exc: BaseException) -> CacheIntegrityError:
        """The error for a failed read of ``sim`` rows [lo, hi)."""
        captions = (f"caption {self.caption_ids[lo]!r} (row {lo})" if hi - lo == 1 else
                    f"captions {self.caption_ids[lo]!r}..{self.caption_ids[hi - 1]!r} "
                    f"(rows {lo}..{hi - 1})")
        return CacheIntegrityError(
            f"{self.path}: dataset 'sim', {captions}: the stored soft labels are damaged "
            f"({_reason(exc)}); run `teachclip cache verify {self.path}`, then {RESCORE}")

    # -------------------------------------------------------------- lookups
    def row_of_caption(self, ids: Sequence[str]) -> np.ndarray:
        """Row index of each caption id; InputError naming the first unknown id."""
        try:
            return np.array([self._row[str(i)] for i in ids], dtype=np.int64)
        except KeyError as exc:
            raise InputError("caption id not in teacher cache", file=self.path,
                             item_id=str(exc.args[0])) from None

    def col_of_video(self, ids: Sequence[str]) -> np.ndarray:
        """Column index of each video id; InputError naming the first unknown id."""
        try:
            return np.array([self._col[str(i)] for i in ids], dtype=np.int64)
        except KeyError as exc:
            raise InputError("video id not in teacher cache", file=self.path,
                             item_id=str(exc.args[0])) from None

    def check_compatible(
        self,
        *,
        max_frames: int | None = None,
        max_words: int | None = None,
        caption_ids: Sequence[str] | None = None,
        video_ids: Sequence[str] | None = None,
        frames_digest: str | None = None,
        manifest_digest: str | None = None,
        frames_path: str | Path | None = None,
        manifest_path: str | Path | None = None,
    ) -> None:
        """Refuse soft labels computed for another setup; MismatchError names both values, the
        file each comes from and what to do.

        ``caption_ids``/``video_ids`` are the student's train ids: each must be in the cache
        (the cache may hold more). Arguments left None are not checked; ``frames_path`` /
        ``manifest_path`` only name the student's inputs in messages.
        """
        frames_in = str(frames_path) if frames_path is not None else "the frames file"
        manifest_in = str(manifest_path) if manifest_path is not None else "the manifest"
        cache_in = f"{self.path.name} (what the teacher was scored on)"
        rescore = "or rescore the teacher on the student's inputs (`teachclip teacher score`)"
        checks = (
            ("max_frames (F)", max_frames, self.F, f"{frames_in}",
             f"use frames extracted with --max-frames {self.F}, {rescore}"),
            ("max_words (L)", max_words, self.L, "the student's --max-words",
             f"train the student with --max-words {self.L}, {rescore}"),
            ("frames digest", frames_digest, self.attrs.get("frames_digest"), frames_in,
             f"pass the frames.h5 the cache was scored from, {rescore}"),
            ("manifest digest", manifest_digest, self.attrs.get("manifest_digest"), manifest_in,
             f"pass the manifest the cache was scored from, {rescore}"),
        )
        for what, expected, found, expected_in, fix in checks:
            if expected is not None and expected != found:
                raise MismatchError(what, expected, found, file=self.path,
                                    expected_in=expected_in, found_in=cache_in, fix=fix)
        for what, wanted, index in (("caption id", caption_ids, self._row),
                                    ("video id", video_ids, self._col)):
            if wanted is None:
                continue
            for item in wanted:
                if str(item) not in index:
                    raise MismatchError(
                        what, f"{item!s} present in cache", f"{item!s} missing", file=self.path,
                        fix=f"the cache was scored on another train split: {rescore[3:]}")

    # -------------------------------------------------------------- batches
    def _read_rows(self, unique_rows: np.ndarray) -> np.ndarray:
        """Full ``sim`` rows for sorted unique row indices (float16)."""
        if self._sim_ram is not None:
            return self._sim_ram[unique_rows]
        rows = self._direct_rows()
        if rows is not None:
            return rows.read(unique_rows)
        ds = self._sim()
        lo, hi = int(unique_rows[0]), int(unique_rows[-1]) + 1
        if hi - lo <= 4 * unique_rows.size:  # dense request: one slab read is cheaper
            try:
                return ds[lo:hi][unique_rows - lo]
            except OSError:
                pass  # find the damaged row below, one row at a time
        # Sparse rows: one direct read per row beats h5py fancy indexing ~8x here (measured:
        # 128 random rows of 6000x9000 float16, 9 ms vs 72 ms). With the checksum HDF5 reads
        # each row's whole chunk, which is why chunks hold few rows (cache.schema).
        out = np.empty((unique_rows.size, ds.shape[1]), dtype=ds.dtype)
        for j, row in enumerate(unique_rows.tolist()):
            try:
                ds.read_direct(out, np.s_[row : row + 1], np.s_[j : j + 1])
            except OSError as exc:
                raise self._damaged(row, row + 1, exc) from None
        return out

    def batch(self, caption_rows: np.ndarray | Sequence[int], video_cols: np.ndarray |
              Sequence[int]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Teacher targets for a batch: ``sim`` float32 [B,B'] (rows × cols, request order,
        duplicates allowed), ``relevance_logits`` float32 [B,F] and ``frame_mask`` bool [B,F]."""
        rows = np.asarray(caption_rows, dtype=np.int64).reshape(-1)
        cols = np.asarray(video_cols, dtype=np.int64).reshape(-1)
        for name, idx, n in (("caption row", rows, self.shape[0]),
                             ("video column", cols, self.shape[1])):
            bad = (idx < 0) | (idx >= n)
            if bad.any():
                raise IndexError(f"{name} {int(idx[bad][0])} outside [0, {n})")
        if rows.size == 0:
            return (np.zeros((0, cols.size), np.float32), np.zeros((0, self.F), np.float32),
                    np.zeros((0, self.F), bool))
        unique_rows, inverse = np.unique(rows, return_inverse=True)
        block = self._read_rows(unique_rows)[:, cols]
        finite = np.isfinite(block).all(axis=1)
        if not finite.all():  # check_data catches this before training; this is the backstop
            row = int(unique_rows[int(np.argmin(finite))])
            raise CacheIntegrityError(
                f"{self.path}: dataset 'sim', caption {self.caption_ids[row]!r} (row {row}): "
                f"NaN/inf teacher score; {RESCORE}")
        sim = block[inverse].astype(np.float32)
        return sim, self._relevance[rows].copy(), self._mask[rows].copy()

