"""Merging the shard files of a distributed scoring run into one cache.

Rank r of W writes a *shard* file (same schema, full-shape datasets, only its blocks written).
:func:`merge_shards` builds the final file: small datasets are copied, ``sim`` is an HDF5 virtual
dataset whose sources are the shards, referenced by paths *relative to the merged file's
directory* (HDF5 resolves them there, so the output directory can move as a whole, e.g. through a
DVC remote). ``copy=True`` writes a plain self-contained file instead.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from pipeline.atomic import tmp_path_for
from pipeline.cache.integrity import cache_content_digest
from pipeline.cache.schema import (
    RESCORE,
    SCHEMA,
    SCHEMA_VERSION,
    SHARD_ATTRS,
    STREAM_ELEMENTS,
    CacheIntegrityError,
    block_rows_ranges,
    chunk_shape,
    write_small,
)
from pipeline.cache.writer import create_block_datasets
from pipeline.diskguard import DiskGuard, close_after_failure, reason_of
from pipeline.errors import InputError, MismatchError, WriteFailedError
from pipeline.h5schema import open_checked, plain_attrs
from pipeline.locks import acquire_tmp_lock


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
    infos = [_read_shard(path) for path in paths]
    common = _check_agreement(infos)
    owner = _block_owners(infos)
    rel_names = [] if copy else _relative_sources(infos, final_path.parent.resolve())
    tmp = tmp_path_for(final_path)
    lock = acquire_tmp_lock(tmp)
    guard = DiskGuard(tmp)
    out: h5py.File | None = None
    try:
        guard.acquire()
        out = h5py.File(tmp, "w", libver=("v110", "latest"))
        _write_merged(out, infos, common, owner, rel_names, copy, on_progress)
        out.close()
        os.replace(tmp, final_path)
    except (OSError, RuntimeError) as exc:
        close_after_failure(out, guard)
        tmp.unlink(missing_ok=True)
        raise WriteFailedError(f"{reason_of(exc)} while merging; the partial merged file was "
                               "removed (the shards are kept): free space and rerun",
                               file=tmp, kept=False) from None
    except BaseException:
        close_after_failure(out, guard)
        tmp.unlink(missing_ok=True)
        raise
    finally:
        guard.release()
        lock.release()
    return final_path


def _read_shard(path: Path) -> dict[str, Any]:
    """A shard's attributes, ids and progress flags (the big ``sim`` stays on disk)."""
    with open_checked(path, schema=SCHEMA, version=SCHEMA_VERSION,
                      what="teacher cache shard", fix=RESCORE) as handle:
        return {
            "path": path, "attrs": plain_attrs(handle),
            "caption_ids": list(handle["caption_ids"].asstr()[:]),
            "video_ids": list(handle["video_ids"].asstr()[:]),
            "caption_video": handle["caption_video"][:],
            "rows_done": handle["rows_done"][:].astype(bool),
            "block_digests": handle["block_digests"][:],
            "sim_shape": handle["sim"].shape,
            "max_frames": handle["relevance"].shape[1],
        }


def _check_agreement(infos: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """The attributes every shard shares (MismatchError naming the shard that differs)."""
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
    return common


def _block_owners(infos: Sequence[dict[str, Any]]) -> np.ndarray:
    """Index of the shard that wrote each block; every block exactly once."""
    n_blocks = infos[0]["rows_done"].shape[0]
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
    return owner


def _relative_sources(infos: Sequence[dict[str, Any]], final_dir: Path) -> list[str]:
    """Shard paths relative to the merged file's directory (HDF5 resolves them there)."""
    names = []
    for info in infos:
        rel = os.path.relpath(info["path"].resolve(), final_dir)
        if rel.startswith(".."):
            raise InputError(f"shard must be in the merged file's directory "
                             f"{final_dir} (or use copy=True)", file=info["path"])
        names.append(rel)
    return names


def _write_merged(out: h5py.File, infos: Sequence[dict[str, Any]], common: dict[str, Any],
                  owner: np.ndarray, rel_names: Sequence[str], copy: bool,
                  on_progress: Callable[[int], None] | None) -> None:
    """Small datasets copied; ``sim`` copied (``copy``) or a virtual dataset over the shards."""
    ref = infos[0]
    block_rows = int(common["block_rows"])
    n_c, n_v = ref["sim_shape"]
    n_f = ref["max_frames"]
    out.attrs.update(common)
    out.attrs["layout"] = "merged" if copy else "virtual"
    if not copy:
        out.attrs["vds_sources_json"] = json.dumps(list(rel_names))
    write_small(out, ref["caption_ids"], ref["video_ids"], ref["caption_video"])
    create_block_datasets(out, n_c, n_v, n_f, block_rows, chunk_shape(n_c, n_v, block_rows),
                          with_sim=copy)
    out["rows_done"][:] = True
    digests = np.zeros_like(ref["block_digests"])
    for index, info in enumerate(infos):
        mine = owner == index
        digests[mine] = info["block_digests"][mine]
    out["block_digests"][:] = digests
    out.attrs["content_digest"] = cache_content_digest(
        ref["caption_ids"], ref["video_ids"], ref["caption_video"], digests)
    if not copy:
        layout = h5py.VirtualLayout(shape=(n_c, n_v), dtype=np.float16)
    for index, info in enumerate(infos):
        ranges = block_rows_ranges(np.flatnonzero(owner == index).tolist(), block_rows, n_c)
        with h5py.File(info["path"], "r") as src:
            for start, stop in ranges:
                out["relevance"][start:stop] = src["relevance"][start:stop]
                out["frame_mask"][start:stop] = src["frame_mask"][start:stop]
                if copy:
                    _copy_rows(src["sim"], out["sim"], start, stop, on_progress)
        if not copy:
            source = h5py.VirtualSource(rel_names[index], "sim", shape=(n_c, n_v),
                                        dtype=np.float16)
            for start, stop in ranges:
                layout[start:stop] = source[start:stop]
    if not copy:
        # NaN fill: a missing source reads as NaN, which verify() reports.
        out.create_virtual_dataset("sim", layout, fillvalue=np.float16(np.nan))


def _copy_rows(src: h5py.Dataset, dst: h5py.Dataset, start: int, stop: int,
               on_progress: Callable[[int], None] | None) -> None:
    """Stream rows [start, stop) of ``sim`` in slabs of about STREAM_ELEMENTS values."""
    step = max(1, STREAM_ELEMENTS // max(1, src.shape[1]))
    for s0 in range(start, stop, step):
        s1 = min(s0 + step, stop)
        dst[s0:s1] = src[s0:s1]
        if on_progress is not None:
            on_progress(s1 - s0)
