"""Teacher cache schema: a teacher's soft labels for every train caption × video pair.

Why a cache: the heavy teachers (X-CLIP, TS2-Net, X-Pool) are scored once, offline, and the
student then trains against exact teacher logits for any batch composition without running them.

Schema ``teachclip.teacher_cache`` version 2 (item axis first):

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
``block_digests``  uint8 [n_blocks, 3, 32] sha256 of each block's sim / relevance / frame_mask
=================  =====================  ====================================================

Attributes: ``schema``, ``schema_version``, ``teacher_kind``, ``checkpoint_sha256``,
``frames_digest``, ``manifest_digest``, ``max_words``, ``max_frames``, ``logit_scale``,
``official_masking``, ``relevance_temperature`` (1 = ``softmax(relevance)`` directly),
``package_version``, ``teacher_config_json``, ``block_rows``, ``layout`` (``single`` | ``shard`` |
``virtual`` | ``merged``), ``checksums`` (``fletcher32``), ``content_digest`` (not in shards;
:mod:`pipeline.cache.integrity`) and, in shard files, ``shard_rank``/``shard_world``/
``shard_assignment``. Nothing time or host dependent, so DVC hashes are reproducible.

Integrity (version 2): every chunked dataset has HDF5's ``fletcher32`` per-chunk checksum, so a
flipped byte fails the read of its chunk, and ``block_digests`` let ``teachclip cache verify``
recompute the data's digests. Version 1 files (neither) stay readable with a warning.

Chunking: ``sim`` chunks are ``(rows, min(Nv, 2M))`` with ``rows`` chosen so a chunk is about
``SIM_CHUNK_BYTES`` (16 KiB: one row at MSR-VTT's 9k videos) and always dividing ``block_rows``.
Why so small: with a checksum HDF5 must read and check a whole chunk to return any part of it,
and a training batch reads ~120 random rows, so big chunks would multiply the bytes read per
step (``bench/cache_chunks.py``). ``sim`` and ``relevance`` have fill value NaN: rows never
written read as NaN, so verification catches them even if the progress flags were wrong.

Resume, shards and merging: :mod:`pipeline.cache.writer` and :mod:`pipeline.cache.merge`.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from pipeline import __version__
from pipeline.errors import DataIntegrityError, InputError

SCHEMA = "teachclip.teacher_cache"
SCHEMA_VERSION = 2
#: Versions readers accept (1: written before checksums and block digests).
READABLE_VERSIONS = (1, 2)
SIM_CHUNK_BYTES = 16 << 10
DEFAULT_CHUNK_BYTES = SIM_CHUNK_BYTES
MAX_CHUNK_BYTES = 4 << 20
#: What every chunked dataset of a version 2 cache gets.
CHECKSUM = {"fletcher32": True}
#: The datasets ``block_digests`` covers, in its second axis.
DIGEST_DATASETS = ("sim", "relevance", "frame_mask")
RESCORE = ("rescore the teacher (`teachclip teacher score`; a rerun resumes what is intact) or "
           "fetch a good copy (e.g. `dvc pull`)")
DEFAULT_BLOCK_ROWS = 1024
ASSIGNMENTS = ("strided", "contiguous")
# Rows × columns read at once while streaming ``sim`` for NaN checks and copies.
STREAM_ELEMENTS = 1 << 24

ROW_DATASETS = ("caption_ids", "caption_video", "sim", "relevance", "frame_mask")
REQUIRED_DATASETS = ("caption_ids", "video_ids", "caption_video", "sim", "relevance",
                     "frame_mask", "rows_done")
#: Also required from version 2 on.
V2_DATASETS = ("block_digests",)
META_ATTRS = ("teacher_kind", "checkpoint_sha256", "frames_digest", "manifest_digest",
              "max_words", "max_frames", "logit_scale", "official_masking",
              "relevance_temperature", "package_version", "teacher_config_json")
SHARD_ATTRS = ("shard_rank", "shard_world", "shard_assignment")


class CacheIntegrityError(DataIntegrityError):
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
    #: Cross-fitting (:mod:`pipeline.data.folds`): K fold teachers scored the rows (0 = the
    #: teacher of ``checkpoint_sha256`` scored every row), with these checkpoints, comma-joined.
    cross_fit_folds: int = 0
    fold_checkpoints_sha256: str = ""

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
        data["cross_fit_folds"] = int(data["cross_fit_folds"])
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
            cross_fit_folds=int(attrs.get("cross_fit_folds", 0)),
            fold_checkpoints_sha256=str(attrs.get("fold_checkpoints_sha256", "")),
        )


def chunk_shape(n_rows: int, n_cols: int, block_rows: int,
                chunk_bytes: int = DEFAULT_CHUNK_BYTES) -> tuple[int, int]:
    """Chunk of the float16 ``sim`` matrix: about ``chunk_bytes`` (at least one row), at most
    4 MiB, whole rows unless a single row exceeds 4 MiB, and a row count that divides
    ``block_rows``."""
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
    handle.create_dataset("caption_video", data=np.asarray(caption_video, dtype=np.int64),
                          **CHECKSUM)


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

