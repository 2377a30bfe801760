"""Teacher cache ``<teacher>.h5``: a teacher's soft labels for every train caption × video pair.

Why a cache: the heavy teachers (X-CLIP, TS2-Net, X-Pool) are scored once, offline, and the
student then trains against exact teacher logits for any batch composition without running them.

Schema ``teachclip.teacher_cache`` version 1 (item axis first):

=================  =====================  ====================================================
dataset            dtype / shape          meaning
=================  =====================  ====================================================
``caption_ids``    vlen utf-8 [Nc]        train caption ids (row order of every row dataset)
``video_ids``      vlen utf-8 [Nv]        train video ids (column order of ``sim``)
``caption_video``  int64 [Nc]             column of each caption's own video
``sim``            float16 [Nc, Nv]       teacher logits (λ-scaled), row-chunked
``relevance``      float32 [Nc, F]        pre-softmax frame scores with the caption's own video
``frame_mask``     bool [Nc, F]           frames the relevance softmax runs over
``rows_done``      bool [n_blocks]        progress: which row blocks are written
=================  =====================  ====================================================

Attributes: ``schema``, ``schema_version``, ``teacher_kind``, ``checkpoint_sha256``,
``frames_digest``, ``manifest_digest``, ``max_words``, ``max_frames``, ``logit_scale``,
``official_masking``, ``relevance_temperature`` (1 = ``softmax(relevance)`` directly),
``package_version``, ``teacher_config_json``, ``block_rows``, ``layout`` (``single`` | ``shard`` |
``virtual`` | ``merged``) and, in shard files, ``shard_rank``/``shard_world``/``shard_assignment``.
Nothing time or host dependent, so DVC hashes are reproducible.

Chunking: ``sim`` chunks are ``(rows, min(Nv, 2M))`` with ``rows`` chosen so a chunk is about
``chunk_bytes`` (1 MiB) and never above 4 MiB, and always dividing ``block_rows`` so a block write
touches whole chunks only. ``sim`` and ``relevance`` have fill value NaN: rows never written read
as NaN, so :func:`verify` catches them even if the progress flags were wrong.

Resume: a writer keeps its progress in ``<final>.tmp`` (``rows_done`` is set only after the
block's data is flushed). Re-opening resumes only if every attribute, id list and the block
layout match; otherwise it raises :class:`MismatchError` (default) or, with
``on_mismatch="restart"``, discards the stale tmp file. An unreadable tmp file (a writer killed
mid-flush) holds nothing recoverable and is restarted.

Distributed scoring: rank r of W writes a *shard* file (same schema, full-shape datasets, only its
blocks written: ``strided`` = blocks r::W, or a ``contiguous`` range). Unwritten chunks occupy no
disk space. :func:`merge_shards` builds the final file: small datasets are copied, ``sim`` is an
HDF5 virtual dataset whose sources are the shards, referenced by paths *relative to the merged
file's directory* (HDF5 resolves them there, so the output directory can move as a whole, e.g.
through a DVC remote). ``copy=True`` writes a plain self-contained file instead.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from pipeline import __version__
from pipeline.atomic import sha256_file, tmp_path_for
from pipeline.errors import InputError, MismatchError, TeachclipError

SCHEMA = "teachclip.teacher_cache"
SCHEMA_VERSION = 1
DEFAULT_CHUNK_BYTES = 1 << 20
MAX_CHUNK_BYTES = 4 << 20
DEFAULT_BLOCK_ROWS = 1024
ASSIGNMENTS = ("strided", "contiguous")
# Rows × columns read at once while streaming ``sim`` for NaN checks and copies.
_STREAM_ELEMENTS = 1 << 24

ROW_DATASETS = ("caption_ids", "caption_video", "sim", "relevance", "frame_mask")
REQUIRED_DATASETS = ("caption_ids", "video_ids", "caption_video", "sim", "relevance",
                     "frame_mask", "rows_done")
META_ATTRS = ("teacher_kind", "checkpoint_sha256", "frames_digest", "manifest_digest",
              "max_words", "max_frames", "logit_scale", "official_masking",
              "relevance_temperature", "package_version", "teacher_config_json")
SHARD_ATTRS = ("shard_rank", "shard_world", "shard_assignment")


class CacheIntegrityError(TeachclipError):
    """A cache (or a block handed to the writer) is incomplete, corrupt or holds NaN/inf."""


@dataclass
class CacheMeta:
    """Provenance of a cache: what the student checks before trusting the soft labels."""

    teacher_kind: str
    checkpoint_sha256: str
    frames_digest: str
    manifest_digest: str
    max_words: int
    max_frames: int
    logit_scale: float
    official_masking: bool = True
    relevance_temperature: float = 1.0
    teacher_config: dict[str, Any] = field(default_factory=dict)
    package_version: str = __version__

    def to_attrs(self) -> dict[str, Any]:
        """HDF5 attribute values (teacher config as canonical JSON)."""
        data = asdict(self)
        config = data.pop("teacher_config")
        data["teacher_config_json"] = json.dumps(config, sort_keys=True)
        data["max_words"] = int(data["max_words"])
        data["max_frames"] = int(data["max_frames"])
        data["logit_scale"] = float(data["logit_scale"])
        data["relevance_temperature"] = float(data["relevance_temperature"])
        data["official_masking"] = bool(data["official_masking"])
        return data

    @classmethod
    def from_attrs(cls, attrs: dict[str, Any]) -> CacheMeta:
        return cls(
            teacher_kind=str(attrs["teacher_kind"]),
            checkpoint_sha256=str(attrs["checkpoint_sha256"]),
            frames_digest=str(attrs["frames_digest"]),
            manifest_digest=str(attrs["manifest_digest"]),
            max_words=int(attrs["max_words"]),
            max_frames=int(attrs["max_frames"]),
            logit_scale=float(attrs["logit_scale"]),
            official_masking=bool(attrs["official_masking"]),
            relevance_temperature=float(attrs["relevance_temperature"]),
            teacher_config=json.loads(str(attrs["teacher_config_json"])),
            package_version=str(attrs["package_version"]),
        )


# ---------------------------------------------------------------------------------- helpers
def _plain(value: Any) -> Any:
    """numpy scalars/bytes from h5py attrs -> plain Python values (comparable, JSON-able)."""
    if isinstance(value, bytes):
        return value.decode("utf-8")
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    return value


def _read_attrs(obj: h5py.HLObject) -> dict[str, Any]:
    return {k: _plain(v) for k, v in obj.attrs.items()}


def chunk_shape(n_rows: int, n_cols: int, block_rows: int,
                chunk_bytes: int = DEFAULT_CHUNK_BYTES) -> tuple[int, int]:
    """Chunk of the float16 ``sim`` matrix: about ``chunk_bytes``, at most 4 MiB, whole rows
    unless a single row exceeds 4 MiB, and a row count that divides ``block_rows``."""
    cols = max(1, min(n_cols, MAX_CHUNK_BYTES // 2))
    target = max(1, min(chunk_bytes, MAX_CHUNK_BYTES) // (2 * cols))
    target = min(target, block_rows, max(1, n_rows))
    rows = max(d for d in range(1, target + 1) if block_rows % d == 0)
    return rows, cols


def default_block_rows(n_rows: int, n_cols: int, chunk_bytes: int = DEFAULT_CHUNK_BYTES) -> int:
    """About DEFAULT_BLOCK_ROWS captions per block, rounded to a multiple of the auto chunk."""
    per_chunk = max(1, min(chunk_bytes, MAX_CHUNK_BYTES) // (2 * max(1, min(n_cols, 1 << 21))))
    block = per_chunk * max(1, DEFAULT_BLOCK_ROWS // per_chunk)
    return max(1, min(block, max(1, n_rows)))


def owned_blocks(n_blocks: int, rank: int, world: int, assignment: str = "strided") -> list[int]:
    """Blocks a shard writes: ``strided`` = r, r+W, ...; ``contiguous`` = one even range."""
    if assignment not in ASSIGNMENTS:
        raise ValueError(f"unknown shard assignment {assignment!r}; expected one of {ASSIGNMENTS}")
    if not 0 <= rank < world:
        raise ValueError(f"shard rank {rank} outside [0, {world})")
    if assignment == "strided":
        return list(range(rank, n_blocks, world))
    lo = (n_blocks * rank) // world
    hi = (n_blocks * (rank + 1)) // world
    return list(range(lo, hi))


def shard_path(final: str | Path, rank: int, world: int) -> Path:
    """Conventional name of shard ``rank`` of ``world`` beside the final cache file."""
    final = Path(final)
    return final.with_name(f"{final.stem}.shard-{rank:03d}-of-{world:03d}{final.suffix}")


def _str_array(values: Sequence[str]) -> np.ndarray:
    return np.array([str(v) for v in values], dtype=object)


def _check_ids(name: str, ids: Sequence[str]) -> list[str]:
    ids = [str(i) for i in ids]
    seen: set[str] = set()
    for i in ids:
        if i in seen:
            raise InputError(f"duplicate id in {name}", item_id=i)
        seen.add(i)
    return ids


# ---------------------------------------------------------------------------------- writer
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
        self.caption_ids = _check_ids("caption_ids", caption_ids)
        self.video_ids = _check_ids("video_ids", video_ids)
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
        self._file = self._open(on_mismatch)

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
            try:
                handle = h5py.File(self.tmp_path, "a")
            except OSError:
                # Killed mid-write: the file is unreadable and holds nothing we could trust.
                self.tmp_path.unlink()
            else:
                problem = self._resume_problem(handle)
                if problem is None:
                    return handle
                handle.close()
                if on_mismatch == "error":
                    what, expected, found = problem
                    raise MismatchError(f"resumable cache {what}", expected, found,
                                        file=self.tmp_path)
                self.tmp_path.unlink()
        return self._create()

    def _resume_problem(self, handle: h5py.File) -> tuple[str, Any, Any] | None:
        """First disagreement between the tmp file and this writer's configuration, or None."""
        found = _read_attrs(handle)
        for key, value in self.attrs.items():
            if found.get(key) != value:
                return key, value, found.get(key)
        for name in REQUIRED_DATASETS:
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
        return None

    def _create(self) -> h5py.File:
        self.tmp_path.parent.mkdir(parents=True, exist_ok=True)
        n_c, n_v, n_f = len(self.caption_ids), len(self.video_ids), self.max_frames
        handle = h5py.File(self.tmp_path, "w")
        handle.attrs.update(self.attrs)
        _write_small(handle, self.caption_ids, self.video_ids, self.caption_video)
        handle.create_dataset("sim", shape=(n_c, n_v), dtype=np.float16, chunks=self.chunks,
                              fillvalue=np.float16(np.nan))
        rel_chunk = (min(n_c, self.block_rows), n_f)
        handle.create_dataset("relevance", shape=(n_c, n_f), dtype=np.float32,
                              chunks=rel_chunk, fillvalue=np.float32(np.nan))
        handle.create_dataset("frame_mask", shape=(n_c, n_f), dtype=bool, chunks=rel_chunk)
        handle.create_dataset("rows_done", shape=(self.n_blocks,), dtype=bool,
                              data=np.zeros(self.n_blocks, dtype=bool))
        handle.flush()
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
        done = self._file["rows_done"][:]
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
        self._file["sim"][start:stop] = sim16
        self._file["relevance"][start:stop] = rel
        self._file["frame_mask"][start:stop] = mask
        self._file.flush()  # data reaches the file before the progress flag says so
        self._file["rows_done"][block_index] = True
        self._file.flush()

    def finalize(self, on_progress: Callable[[int], None] | None = None) -> Path:
        """Check every owned block is done and every written value finite, then move the tmp file
        onto the final name. ``on_progress`` gets the number of rows just checked."""
        pending = self.pending_blocks()
        if pending:
            raise CacheIntegrityError(
                f"{self.tmp_path}: {len(pending)} block(s) not written yet, first {pending[0]}")
        problems = _scan_values(self._file, self._owned, self.block_rows, on_progress)
        if problems:
            raise CacheIntegrityError(f"{self.tmp_path}: " + "; ".join(problems))
        self._file.close()
        os.replace(self.tmp_path, self.final_path)
        return self.final_path

    def close(self) -> None:
        """Close without finalizing (progress stays in the tmp file for a later resume)."""
        if self._file.id.valid:
            self._file.close()

    def __enter__(self) -> TeacherCacheWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _write_small(handle: h5py.File, caption_ids: Sequence[str], video_ids: Sequence[str],
                 caption_video: np.ndarray) -> None:
    string = h5py.string_dtype()
    handle.create_dataset("caption_ids", data=_str_array(caption_ids), dtype=string)
    handle.create_dataset("video_ids", data=_str_array(video_ids), dtype=string)
    handle.create_dataset("caption_video", data=np.asarray(caption_video, dtype=np.int64))


def _block_rows_ranges(blocks: Sequence[int], block_rows: int, n_rows: int
                       ) -> list[tuple[int, int]]:
    """Coalesced [start, stop) row ranges of a sorted block list."""
    ranges: list[tuple[int, int]] = []
    for b in sorted(blocks):
        start, stop = b * block_rows, min((b + 1) * block_rows, n_rows)
        if ranges and ranges[-1][1] == start:
            ranges[-1] = (ranges[-1][0], stop)
        else:
            ranges.append((start, stop))
    return ranges


def _scan_values(handle: h5py.File, blocks: Sequence[int], block_rows: int,
                 on_progress: Callable[[int], None] | None = None) -> list[str]:
    """NaN/inf in ``sim`` (streamed) and in masked-in ``relevance`` for the given blocks."""
    problems: list[str] = []
    sim, rel, mask = handle["sim"], handle["relevance"], handle["frame_mask"]
    n_rows, n_cols = sim.shape
    step = max(1, _STREAM_ELEMENTS // max(1, n_cols))
    if sim.chunks:
        step = max(sim.chunks[0], step - step % sim.chunks[0])
    bad_sim = bad_rel = 0
    first_sim = first_rel = None
    for start, stop in _block_rows_ranges(blocks, block_rows, n_rows):
        for s0 in range(start, stop, step):
            s1 = min(s0 + step, stop)
            finite = np.isfinite(sim[s0:s1]).all(axis=1)
            if not finite.all():
                bad_sim += int((~finite).sum())
                first_sim = first_sim if first_sim is not None else s0 + int(np.argmin(finite))
            if on_progress is not None:
                on_progress(s1 - s0)
        r, m = rel[start:stop], mask[start:stop].astype(bool)
        finite = (np.isfinite(r) | ~m).all(axis=1)
        if not finite.all():
            bad_rel += int((~finite).sum())
            first_rel = first_rel if first_rel is not None else start + int(np.argmin(finite))
    if bad_sim:
        problems.append(f"sim has NaN/inf in {bad_sim} row(s), first row {first_sim}")
    if bad_rel:
        problems.append(f"relevance has NaN/inf in {bad_rel} row(s), first row {first_rel}")
    return problems


# ---------------------------------------------------------------------------------- merging
def merge_shards(shard_paths: Sequence[str | Path], final_path: str | Path, *,
                 copy: bool = False, on_progress: Callable[[int], None] | None = None) -> Path:
    """Combine finalized shard files into one cache presenting the same datasets.

    Default: ``sim`` becomes a virtual dataset (no copy of the big matrix) whose sources are the
    shards, referenced relative to ``final_path``'s directory (so shards must live in that
    directory or below it, and must stay there). ``copy=True`` copies everything into a plain
    self-contained file (shards can then be deleted). Every block must be written by exactly one
    shard and all shards must agree on attributes and ids.
    """
    final_path = Path(final_path)
    paths = [Path(p) for p in shard_paths]
    if not paths:
        raise InputError("no shard files to merge")
    infos = []
    for path in paths:
        if not path.is_file():
            raise InputError("shard file not found", file=path)
        with h5py.File(path, "r") as handle:
            attrs = _read_attrs(handle)
            if attrs.get("schema") != SCHEMA:
                raise InputError(f"not a teacher cache (schema {attrs.get('schema')!r})",
                                 file=path)
            infos.append({
                "path": path, "attrs": attrs,
                "caption_ids": list(handle["caption_ids"].asstr()[:]),
                "video_ids": list(handle["video_ids"].asstr()[:]),
                "caption_video": handle["caption_video"][:],
                "rows_done": handle["rows_done"][:].astype(bool),
                "sim_shape": handle["sim"].shape,
                "max_frames": handle["relevance"].shape[1],
            })
    ref = infos[0]
    common = {k: v for k, v in ref["attrs"].items() if k not in SHARD_ATTRS + ("layout",)}
    for info in infos[1:]:
        for key, value in common.items():
            if info["attrs"].get(key) != value:
                raise MismatchError(f"shard attribute {key}", value, info["attrs"].get(key),
                                    file=info["path"])
        for key in ("caption_ids", "video_ids"):
            if info[key] != ref[key]:
                raise MismatchError(key, f"same as {ref['path'].name}", "different ids",
                                    file=info["path"])
        if not np.array_equal(info["caption_video"], ref["caption_video"]):
            raise MismatchError("caption_video", f"same as {ref['path'].name}",
                                "different values", file=info["path"])
    n_blocks = ref["rows_done"].shape[0]
    owner = np.full(n_blocks, -1, dtype=np.int64)
    for index, info in enumerate(infos):
        for b in np.flatnonzero(info["rows_done"]):
            if owner[b] >= 0:
                raise MismatchError(f"block {int(b)} owner", infos[owner[b]]["path"].name,
                                    f"also {info['path'].name}")
            owner[b] = index
    if (owner < 0).any():
        raise CacheIntegrityError(f"block {int(np.flatnonzero(owner < 0)[0])} is in no shard "
                                  f"({int((owner < 0).sum())} of {n_blocks} missing)")
    block_rows = int(common["block_rows"])
    n_c, n_v = ref["sim_shape"]
    n_f = ref["max_frames"]
    final_dir = final_path.parent.resolve()
    rel_names = []
    if not copy:
        for info in infos:
            rel = os.path.relpath(info["path"].resolve(), final_dir)
            if rel.startswith(".."):
                raise InputError(f"shard must be in the merged file's directory "
                                 f"{final_dir} (or use copy=True)", file=info["path"])
            rel_names.append(rel)

    tmp = tmp_path_for(final_path)
    final_path.parent.mkdir(parents=True, exist_ok=True)
    try:
        with h5py.File(tmp, "w", libver=("v110", "latest")) as out:
            out.attrs.update(common)
            out.attrs["layout"] = "merged" if copy else "virtual"
            if not copy:
                out.attrs["vds_sources_json"] = json.dumps(rel_names)
            _write_small(out, ref["caption_ids"], ref["video_ids"], ref["caption_video"])
            rel_chunk = (min(n_c, block_rows), n_f)
            out.create_dataset("relevance", shape=(n_c, n_f), dtype=np.float32,
                               chunks=rel_chunk, fillvalue=np.float32(np.nan))
            out.create_dataset("frame_mask", shape=(n_c, n_f), dtype=bool, chunks=rel_chunk)
            out.create_dataset("rows_done", data=np.ones(n_blocks, dtype=bool))
            if copy:
                chunks = chunk_shape(n_c, n_v, block_rows)
                out.create_dataset("sim", shape=(n_c, n_v), dtype=np.float16, chunks=chunks,
                                   fillvalue=np.float16(np.nan))
            else:
                layout = h5py.VirtualLayout(shape=(n_c, n_v), dtype=np.float16)
            for index, info in enumerate(infos):
                blocks = np.flatnonzero(owner == index).tolist()
                ranges = _block_rows_ranges(blocks, block_rows, n_c)
                with h5py.File(info["path"], "r") as src:
                    for start, stop in ranges:
                        out["relevance"][start:stop] = src["relevance"][start:stop]
                        out["frame_mask"][start:stop] = src["frame_mask"][start:stop]
                        if copy:
                            step = max(1, _STREAM_ELEMENTS // max(1, n_v))
                            for s0 in range(start, stop, step):
                                s1 = min(s0 + step, stop)
                                out["sim"][s0:s1] = src["sim"][s0:s1]
                                if on_progress is not None:
                                    on_progress(s1 - s0)
                if not copy:
                    source = h5py.VirtualSource(rel_names[index], "sim", shape=(n_c, n_v),
                                                dtype=np.float16)
                    for start, stop in ranges:
                        layout[start:stop] = source[start:stop]
            if not copy:
                # NaN fill: a missing source reads as NaN, which verify() reports.
                out.create_virtual_dataset("sim", layout, fillvalue=np.float16(np.nan))
    except BaseException:
        if tmp.exists():
            tmp.unlink()
        raise
    os.replace(tmp, final_path)
    return final_path


def _virtual_sources(handle: h5py.File, file_dir: Path) -> list[tuple[str, Path]]:
    """(stored name, resolved path) of each distinct VDS source file of ``sim``."""
    ds = handle["sim"]
    if not ds.is_virtual:
        return []
    names: list[str] = []
    for vmap in ds.virtual_sources():
        if vmap.file_name not in names:
            names.append(vmap.file_name)
    out = []
    for name in names:
        path = Path(name)
        out.append((name, path if path.is_absolute() else file_dir / path))
    return out


# ---------------------------------------------------------------------------------- reader
class TeacherCache:
    """Read-side view of a cache, made for DataLoader workers.

    Small arrays (ids, ``caption_video``, ``relevance``, ``frame_mask``) are read once in
    ``__init__`` through a short-lived handle; the ``sim`` handle is opened lazily in the process
    that first needs it and dropped on pickling, because h5py handles neither pickle nor survive
    a fork (pytorch#11929). ``load_all=True`` keeps ``sim`` in RAM (float16) when it fits.
    """

    def __init__(self, path: str | Path, *, load_all: bool = False) -> None:
        self.path = Path(path)
        if not self.path.is_file():
            raise InputError("teacher cache not found", file=self.path)
        try:
            handle = h5py.File(self.path, "r")
        except OSError as exc:
            raise InputError(f"cannot open teacher cache: {exc}", file=self.path) from exc
        with handle:
            attrs = _read_attrs(handle)
            if attrs.get("schema") != SCHEMA:
                raise InputError(f"not a teacher cache (schema {attrs.get('schema')!r})",
                                 file=self.path)
            if attrs.get("schema_version") != SCHEMA_VERSION:
                raise MismatchError("teacher cache schema_version", SCHEMA_VERSION,
                                    attrs.get("schema_version"), file=self.path)
            missing = [name for name in REQUIRED_DATASETS if name not in handle]
            if missing:
                raise InputError(f"teacher cache lacks dataset(s) {missing}", file=self.path)
            done = handle["rows_done"][:].astype(bool)
            if attrs.get("layout") == "shard" or not done.all():
                raise CacheIntegrityError(
                    f"{self.path}: unfinished cache or shard ({int((~done).sum())} of "
                    f"{done.size} blocks missing, layout {attrs.get('layout')!r})")
            for name, resolved in _virtual_sources(handle, self.path.parent):
                if not resolved.is_file():
                    raise InputError(f"virtual dataset source {name!r} not found "
                                     f"(expected at {resolved})", file=self.path)
            self.attrs: dict[str, Any] = attrs
            self.caption_ids: list[str] = list(handle["caption_ids"].asstr()[:])
            self.video_ids: list[str] = list(handle["video_ids"].asstr()[:])
            self.caption_video: np.ndarray = handle["caption_video"][:].astype(np.int64)
            self._relevance: np.ndarray = handle["relevance"][:].astype(np.float32)
            self._mask: np.ndarray = handle["frame_mask"][:].astype(bool)
            self.shape: tuple[int, int] = tuple(handle["sim"].shape)  # type: ignore[assignment]
        self._row = {c: i for i, c in enumerate(self.caption_ids)}
        self._col = {v: i for i, v in enumerate(self.video_ids)}
        self._sim_ram: np.ndarray | None = None
        self._file: h5py.File | None = None
        self._pid: int | None = None
        if load_all:
            self.load_all()

    @classmethod
    def open(cls, path: str | Path, *, load_all: bool = False) -> TeacherCache:
        """Open a finished cache (same as the constructor; reads only small arrays eagerly)."""
        return cls(path, load_all=load_all)

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

    def load_all(self, on_progress: Callable[[int], None] | None = None) -> None:
        """Read the whole ``sim`` matrix into RAM (float16: Nc·Nv·2 bytes)."""
        if self._sim_ram is not None:
            return
        ds = self._sim()
        out = np.empty(ds.shape, dtype=np.float16)
        step = max(1, _STREAM_ELEMENTS // max(1, ds.shape[1]))
        for s0 in range(0, ds.shape[0], step):
            s1 = min(s0 + step, ds.shape[0])
            out[s0:s1] = ds[s0:s1]
            if on_progress is not None:
                on_progress(s1 - s0)
        self._sim_ram = out
        self.close()

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
    ) -> None:
        """Refuse soft labels computed for another setup; MismatchError names both values.

        ``caption_ids``/``video_ids`` are the student's train ids: each must be in the cache
        (the cache may hold more). Arguments left None are not checked.
        """
        checks = (("max_frames (F)", max_frames, self.F),
                  ("max_words (L)", max_words, self.L),
                  ("frames digest", frames_digest, self.attrs.get("frames_digest")),
                  ("manifest digest", manifest_digest, self.attrs.get("manifest_digest")))
        for what, expected, found in checks:
            if expected is not None and expected != found:
                raise MismatchError(what, expected, found, file=self.path)
        for what, wanted, index in (("caption id", caption_ids, self._row),
                                    ("video id", video_ids, self._col)):
            if wanted is None:
                continue
            for item in wanted:
                if str(item) not in index:
                    raise MismatchError(what, f"{item!s} present in cache",
                                        f"{item!s} missing", file=self.path)

    # -------------------------------------------------------------- batches
    def _read_rows(self, unique_rows: np.ndarray) -> np.ndarray:
        """Full ``sim`` rows for sorted unique row indices (float16)."""
        if self._sim_ram is not None:
            return self._sim_ram[unique_rows]
        ds = self._sim()
        lo, hi = int(unique_rows[0]), int(unique_rows[-1]) + 1
        if hi - lo <= 4 * unique_rows.size:  # dense request: one slab read is cheaper
            return ds[lo:hi][unique_rows - lo]
        # Sparse rows: one direct read per row beats h5py fancy indexing ~8x here (measured:
        # 128 random rows of 6000x9000 float16, 9 ms vs 72 ms) because, with the chunk cache
        # off, HDF5 reads only the selected bytes of an unfiltered chunk.
        out = np.empty((unique_rows.size, ds.shape[1]), dtype=ds.dtype)
        for j, row in enumerate(unique_rows.tolist()):
            ds.read_direct(out, np.s_[row : row + 1], np.s_[j : j + 1])
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
        sim = block[inverse].astype(np.float32)
        return sim, self._relevance[rows].copy(), self._mask[rows].copy()

    def relevance_probs(self, rows: np.ndarray | Sequence[int]) -> np.ndarray:
        """Teacher relevance R [B,F]: softmax of relevance/temperature over masked-in frames,
        exactly 0 on the others (float32)."""
        rows = np.asarray(rows, dtype=np.int64).reshape(-1)
        logits = self._relevance[rows].astype(np.float64)
        logits = logits / float(self.attrs.get("relevance_temperature", 1.0))
        mask = self._mask[rows]
        logits = np.where(mask, logits, -np.inf)
        logits -= logits.max(axis=1, keepdims=True)
        expd = np.where(mask, np.exp(logits), 0.0)
        return (expd / expd.sum(axis=1, keepdims=True)).astype(np.float32)


# ---------------------------------------------------------------------------------- verify/info
def verify(
    path: str | Path,
    frames_digest: str | None = None,
    manifest_digest: str | None = None,
    checkpoint_path: str | Path | None = None,
    on_progress: Callable[[int], None] | None = None,
) -> list[str]:
    """Every problem found in a cache file (empty list = fine). Streams ``sim`` by chunks.

    Checks schema/version, attributes, shape consistency, id uniqueness, ``caption_video``
    range, virtual dataset sources, progress flags, NaN/inf, and digests against the given
    artifacts (checkpoint digest = sha256 of the file's bytes). A shard file is checked on its
    own blocks only.
    """
    path = Path(path)
    if not path.is_file():
        return [f"{path}: file not found"]
    try:
        handle = h5py.File(path, "r")
    except OSError as exc:
        return [f"{path}: cannot open as HDF5 ({exc})"]
    problems: list[str] = []
    with handle:
        attrs = _read_attrs(handle)
        if attrs.get("schema") != SCHEMA:
            return [f"schema is {attrs.get('schema')!r}, expected {SCHEMA!r}"]
        if attrs.get("schema_version") != SCHEMA_VERSION:
            return [f"schema_version is {attrs.get('schema_version')!r}, expected "
                    f"{SCHEMA_VERSION}"]
        missing = [name for name in REQUIRED_DATASETS if name not in handle]
        if missing:
            return [f"missing dataset(s): {', '.join(missing)}"]
        for key in META_ATTRS + ("block_rows", "layout"):
            if key not in attrs:
                problems.append(f"missing attribute {key!r}")
        n_c = handle["caption_ids"].shape[0]
        n_v = handle["video_ids"].shape[0]
        expected_shapes = {"caption_video": (n_c,), "sim": (n_c, n_v)}
        n_f = handle["relevance"].shape[1] if handle["relevance"].ndim == 2 else None
        expected_shapes["relevance"] = (n_c, n_f)
        expected_shapes["frame_mask"] = (n_c, n_f)
        block_rows = int(attrs.get("block_rows", 0) or 0)
        n_blocks = math.ceil(n_c / block_rows) if block_rows > 0 else None
        if n_blocks is None:
            problems.append(f"block_rows attribute is {attrs.get('block_rows')!r}")
        else:
            expected_shapes["rows_done"] = (n_blocks,)
        shape_ok = True
        for name, shape in expected_shapes.items():
            if handle[name].shape != shape:
                problems.append(f"{name} has shape {handle[name].shape}, expected {shape} "
                                f"(caption_ids: {n_c}, video_ids: {n_v})")
                shape_ok = False
        if n_f is not None and "max_frames" in attrs and n_f != attrs["max_frames"]:
            problems.append(f"relevance has {n_f} frames but attribute max_frames is "
                            f"{attrs['max_frames']}")
        dtypes = {"sim": np.float16, "relevance": np.float32, "caption_video": np.int64,
                  "frame_mask": np.bool_, "rows_done": np.bool_}
        for name, dtype in dtypes.items():
            if handle[name].dtype != dtype:
                problems.append(f"{name} dtype is {handle[name].dtype}, expected "
                                f"{np.dtype(dtype)}")
        for name in ("caption_ids", "video_ids"):
            ids = handle[name].asstr()[:]
            unique, counts = np.unique(ids, return_counts=True)
            if (counts > 1).any():
                problems.append(f"{name} has duplicates, e.g. {unique[counts > 1][0]!r}")
        cv = handle["caption_video"][:]
        if cv.size and ((cv < 0) | (cv >= n_v)).any():
            row = int(np.flatnonzero((cv < 0) | (cv >= n_v))[0])
            problems.append(f"caption_video[{row}] = {int(cv[row])} outside [0, {n_v})")
        for name, resolved in _virtual_sources(handle, path.parent):
            if not resolved.is_file():
                problems.append(f"virtual dataset source {name!r} missing (expected at "
                                f"{resolved})")
        if shape_ok and n_blocks is not None:
            if attrs.get("layout") == "shard":
                try:
                    blocks = owned_blocks(n_blocks, int(attrs["shard_rank"]),
                                          int(attrs["shard_world"]),
                                          str(attrs["shard_assignment"]))
                except (KeyError, ValueError) as exc:
                    problems.append(f"bad shard attributes: {exc}")
                    blocks = []
            else:
                blocks = list(range(n_blocks))
            done = handle["rows_done"][:].astype(bool)
            not_done = [b for b in blocks if not done[b]]
            if not_done:
                problems.append(f"{len(not_done)} of {len(blocks)} row block(s) not written, "
                                f"first block {not_done[0]}")
            scan = [b for b in blocks if done[b]]
            problems.extend(_scan_values(handle, scan, block_rows, on_progress))
            mask = handle["frame_mask"][:].astype(bool)
            rows = np.concatenate([np.arange(s, e) for s, e in
                                   _block_rows_ranges(scan, block_rows, n_c)] or [[]])
            rows = rows.astype(np.int64)
            empty = ~mask[rows].any(axis=1) if rows.size else np.zeros(0, bool)
            if empty.any():
                problems.append(f"frame_mask selects no frame in {int(empty.sum())} row(s), "
                                f"first row {int(rows[empty][0])}")
    for what, given, stored in (("frames digest", frames_digest, attrs.get("frames_digest")),
                                ("manifest digest", manifest_digest,
                                 attrs.get("manifest_digest"))):
        if given is not None and given != stored:
            problems.append(f"{what} mismatch: artifact has {given!r}, cache records {stored!r}")
    if checkpoint_path is not None:
        checkpoint_path = Path(checkpoint_path)
        if not checkpoint_path.is_file():
            problems.append(f"checkpoint {checkpoint_path} not found")
        else:
            digest = sha256_file(checkpoint_path)
            if digest != attrs.get("checkpoint_sha256"):
                problems.append(f"checkpoint sha256 mismatch: {checkpoint_path} has {digest!r}, "
                                f"cache records {attrs.get('checkpoint_sha256')!r}")
    return problems


def info(path: str | Path) -> dict[str, Any]:
    """Summary of a cache: schema, provenance attributes, shapes, dtypes, chunking, layout,
    on-disk size (including virtual sources) and bytes per caption."""
    path = Path(path)
    if not path.is_file():
        raise InputError("teacher cache not found", file=path)
    try:
        handle = h5py.File(path, "r")
    except OSError as exc:
        raise InputError(f"cannot open as HDF5: {exc}", file=path) from exc
    with handle:
        attrs = _read_attrs(handle)
        if attrs.get("schema") != SCHEMA:
            raise InputError(f"not a teacher cache (schema {attrs.get('schema')!r})", file=path)
        datasets = {}
        for name in REQUIRED_DATASETS:
            if name in handle:
                ds = handle[name]
                datasets[name] = {"shape": list(ds.shape), "dtype": str(ds.dtype),
                                  "chunks": list(ds.chunks) if ds.chunks else None,
                                  "virtual": bool(ds.is_virtual)}
        sources = _virtual_sources(handle, path.parent)
        n_c = handle["caption_ids"].shape[0] if "caption_ids" in handle else 0
        done = handle["rows_done"][:] if "rows_done" in handle else np.zeros(0, bool)
    size = path.stat().st_size
    source_bytes = sum(p.stat().st_size for _, p in sources if p.is_file())
    total = size + source_bytes
    provenance = {k: attrs[k] for k in attrs if k not in ("schema", "schema_version")}
    if "teacher_config_json" in provenance:
        provenance["teacher_config"] = json.loads(str(provenance.pop("teacher_config_json")))
    return {
        "path": str(path),
        "schema": attrs.get("schema"),
        "schema_version": attrs.get("schema_version"),
        "provenance": provenance,
        "n_captions": int(n_c),
        "n_videos": datasets.get("video_ids", {}).get("shape", [0])[0],
        "max_frames": datasets.get("relevance", {}).get("shape", [0, 0])[1],
        "datasets": datasets,
        "blocks_done": int(np.asarray(done).sum()),
        "n_blocks": int(np.asarray(done).size),
        "virtual_sources": [name for name, _ in sources],
        "file_bytes": int(size),
        "total_bytes": int(total),
        "bytes_per_caption": float(total / n_c) if n_c else 0.0,
    }
