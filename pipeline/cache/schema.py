"""Teacher cache schema: a teacher's soft labels for every train caption × video pair.

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
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from pipeline import __version__
from pipeline.errors import InputError, TeachclipError

SCHEMA = "teachclip.teacher_cache"
SCHEMA_VERSION = 1
DEFAULT_CHUNK_BYTES = 1 << 20
MAX_CHUNK_BYTES = 4 << 20
DEFAULT_BLOCK_ROWS = 1024
ASSIGNMENTS = ("strided", "contiguous")
# Rows × columns read at once while streaming ``sim`` for NaN checks and copies.
STREAM_ELEMENTS = 1 << 24

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


def str_array(values: Sequence[str]) -> np.ndarray:
    return np.array([str(v) for v in values], dtype=object)


def check_ids(name: str, ids: Sequence[str]) -> list[str]:
    ids = [str(i) for i in ids]
    seen: set[str] = set()
    for i in ids:
        if i in seen:
            raise InputError(f"duplicate id in {name}", item_id=i)
        seen.add(i)
    return ids



def write_small(handle: h5py.File, caption_ids: Sequence[str], video_ids: Sequence[str],
                 caption_video: np.ndarray) -> None:
    string = h5py.string_dtype()
    handle.create_dataset("caption_ids", data=str_array(caption_ids), dtype=string)
    handle.create_dataset("video_ids", data=str_array(video_ids), dtype=string)
    handle.create_dataset("caption_video", data=np.asarray(caption_video, dtype=np.int64))


def block_rows_ranges(blocks: Sequence[int], block_rows: int, n_rows: int
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


def scan_values(handle: h5py.File, blocks: Sequence[int], block_rows: int,
                 on_progress: Callable[[int], None] | None = None) -> list[str]:
    """NaN/inf in ``sim`` (streamed) and in masked-in ``relevance`` for the given blocks."""
    problems: list[str] = []
    sim, rel, mask = handle["sim"], handle["relevance"], handle["frame_mask"]
    n_rows, n_cols = sim.shape
    step = max(1, STREAM_ELEMENTS // max(1, n_cols))
    if sim.chunks:
        step = max(sim.chunks[0], step - step % sim.chunks[0])
    bad_sim = bad_rel = 0
    first_sim = first_rel = None
    for start, stop in block_rows_ranges(blocks, block_rows, n_rows):
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



def virtual_sources(handle: h5py.File, file_dir: Path) -> list[tuple[str, Path]]:
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

