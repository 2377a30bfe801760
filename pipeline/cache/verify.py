"""Checking a teacher cache end to end (``teachclip cache verify``) and summarising it.

Why recompute: an attribute compared with itself proves nothing, so verification streams the
data through HDF5's per-chunk checksums, recomputes every block's digests and the file's
``content_digest`` (:mod:`pipeline.cache.integrity`), and names the dataset, block and captions
of anything that differs.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from pipeline.atomic import sha256_file
from pipeline.cache.integrity import cache_content_digest, scan_blocks
from pipeline.cache.schema import (
    META_ATTRS,
    READABLE_VERSIONS,
    REQUIRED_DATASETS,
    RESCORE,
    SCHEMA,
    V2_DATASETS,
    block_rows_ranges,
    owned_blocks,
    virtual_sources,
)
from pipeline.errors import TeachclipError
from pipeline.h5schema import open_checked, plain_attrs


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
        return [f"{path}: cannot open as HDF5 (truncated or damaged?) ({exc}); {RESCORE}"]
    handle.close()
    try:
        handle = open_checked(path, schema=SCHEMA, version=READABLE_VERSIONS,
                              what="teacher cache", fix=RESCORE)
    except TeachclipError as exc:
        return [str(exc)]
    with handle:
        attrs = plain_attrs(handle)
        v2 = attrs["schema_version"] >= 2
        missing = [name for name in REQUIRED_DATASETS + (V2_DATASETS if v2 else ())
                   if name not in handle]
        if missing:
            return [f"missing dataset(s): {', '.join(missing)}"]
        problems = [] if v2 else [
            "written before checksums (teacher cache schema version 1): damage to its data "
            f"cannot be detected; {RESCORE} to get a checkable cache"]
        problems += [f"missing attribute {key!r}" for key in META_ATTRS + ("block_rows", "layout")
                     if key not in attrs]
        try:
            structure, n_blocks = _structure_problems(handle, attrs)  # None: bad shapes
            problems += structure + _id_problems(handle, path)
        except OSError as exc:
            return problems + [f"small datasets cannot be read ({exc}); {RESCORE}"]
        if n_blocks is not None:
            problems += _content_problems(handle, attrs, n_blocks, on_progress)
    return problems + _provenance_problems(path, attrs, frames_digest, manifest_digest,
                                           checkpoint_path)


def _structure_problems(handle: h5py.File, attrs: dict[str, Any]
                        ) -> tuple[list[str], int | None]:
    """Shapes and dtypes consistent with the id lists and ``block_rows``; the block count."""
    problems: list[str] = []
    n_c = handle["caption_ids"].shape[0]
    n_v = handle["video_ids"].shape[0]
    n_f = handle["relevance"].shape[1] if handle["relevance"].ndim == 2 else None
    expected = {"caption_video": (n_c,), "sim": (n_c, n_v), "relevance": (n_c, n_f),
                "frame_mask": (n_c, n_f)}
    block_rows = int(attrs.get("block_rows", 0) or 0)
    n_blocks = math.ceil(n_c / block_rows) if block_rows > 0 else None
    if n_blocks is None:
        problems.append(f"block_rows attribute is {attrs.get('block_rows')!r}")
    else:
        expected["rows_done"] = (n_blocks,)
        if "block_digests" in handle:
            expected["block_digests"] = (n_blocks, 3, 32)
    for name, shape in expected.items():
        if handle[name].shape != shape:
            problems.append(f"{name} has shape {handle[name].shape}, expected {shape} "
                            f"(caption_ids: {n_c}, video_ids: {n_v})")
    if n_f is not None and "max_frames" in attrs and n_f != attrs["max_frames"]:
        problems.append(f"relevance has {n_f} frames but attribute max_frames is "
                        f"{attrs['max_frames']}")
    shape_problems = list(problems)
    dtypes = {"sim": np.float16, "relevance": np.float32, "caption_video": np.int64,
              "frame_mask": np.bool_, "rows_done": np.bool_}
    for name, dtype in dtypes.items():
        if handle[name].dtype != dtype:
            problems.append(f"{name} dtype is {handle[name].dtype}, expected {np.dtype(dtype)}")
    return problems, (n_blocks if not shape_problems else None)


def _id_problems(handle: h5py.File, path: Path) -> list[str]:
    """Unique ids, ``caption_video`` in range, virtual sources present."""
    problems = []
    for name in ("caption_ids", "video_ids"):
        unique, counts = np.unique(handle[name].asstr()[:], return_counts=True)
        if (counts > 1).any():
            problems.append(f"{name} has duplicates, e.g. {unique[counts > 1][0]!r}")
    n_v = handle["video_ids"].shape[0]
    cv = handle["caption_video"][:]
    if cv.size and ((cv < 0) | (cv >= n_v)).any():
        row = int(np.flatnonzero((cv < 0) | (cv >= n_v))[0])
        problems.append(f"caption_video[{row}] = {int(cv[row])} outside [0, {n_v})")
    for name, resolved in virtual_sources(handle, path.parent):
        if not resolved.is_file():
            problems.append(f"virtual dataset source {name!r} missing (expected at {resolved})")
    return problems


def _content_problems(handle: h5py.File, attrs: dict[str, Any], n_blocks: int,
                      on_progress: Callable[[int], None] | None) -> list[str]:
    """Progress flags of the blocks this file owns, NaN/inf, and empty frame masks."""
    if attrs.get("layout") == "shard":
        try:
            blocks = owned_blocks(n_blocks, int(attrs["shard_rank"]), int(attrs["shard_world"]),
                                  str(attrs["shard_assignment"]))
        except (KeyError, ValueError) as exc:
            return [f"bad shard attributes: {exc}"]
    else:
        blocks = list(range(n_blocks))
    problems = []
    block_rows = int(attrs["block_rows"])
    done = handle["rows_done"][:].astype(bool)
    not_done = [b for b in blocks if not done[b]]
    if not_done:
        problems.append(f"{len(not_done)} of {len(blocks)} row block(s) not written, "
                        f"first block {not_done[0]}")
    scan = [b for b in blocks if done[b]]
    problems.extend(scan_blocks(handle, scan, block_rows, on_progress=on_progress))
    problems.extend(_digest_problem(handle, attrs, done))
    try:
        mask = handle["frame_mask"][:].astype(bool)
    except OSError:
        return problems  # the block scan above named the damaged rows
    n_c = handle["caption_ids"].shape[0]
    ranges = block_rows_ranges(scan, block_rows, n_c)
    rows = np.concatenate([np.arange(s, e) for s, e in ranges] or [[]]).astype(np.int64)
    empty = ~mask[rows].any(axis=1) if rows.size else np.zeros(0, bool)
    if empty.any():
        problems.append(f"frame_mask selects no frame in {int(empty.sum())} row(s), "
                        f"first row {int(rows[empty][0])}")
    return problems


def _digest_problem(handle: h5py.File, attrs: dict[str, Any], done: np.ndarray) -> list[str]:
    """``content_digest`` against the one recomputed from ids, caption_video and the blocks."""
    if "block_digests" not in handle or attrs.get("layout") == "shard" or not done.all():
        return []
    try:
        found = cache_content_digest(list(handle["caption_ids"].asstr()[:]),
                                     list(handle["video_ids"].asstr()[:]),
                                     handle["caption_video"][:], handle["block_digests"][:])
    except OSError as exc:
        return [f"ids or block digests cannot be read ({exc}); {RESCORE}"]
    if found != attrs.get("content_digest"):
        return ["content_digest does not match the ids and block digests stored in the file: "
                f"its small datasets changed after scoring; {RESCORE}"]
    return []


def _provenance_problems(path: Path, attrs: dict[str, Any], frames_digest: str | None,
                         manifest_digest: str | None,
                         checkpoint_path: str | Path | None) -> list[str]:
    """Digests recorded in the cache against the artifacts given: which file holds which value
    and what to do."""
    problems = []
    rescore = "or rescore the teacher on it (`teachclip teacher score`)"
    for what, option, given, stored in (
            ("frames digest", "--frames", frames_digest, attrs.get("frames_digest")),
            ("manifest digest", "--manifest", manifest_digest, attrs.get("manifest_digest"))):
        if given is not None and given != stored:
            problems.append(f"{what} mismatch: the {option} file has {given!r}, {path.name} was "
                            f"scored on {stored!r}; pass the {option} file the cache was scored "
                            f"from, {rescore}")
    if checkpoint_path is not None:
        checkpoint_path = Path(checkpoint_path)
        if not checkpoint_path.is_file():
            problems.append(f"checkpoint {checkpoint_path} not found")
        else:
            digest = sha256_file(checkpoint_path)
            if digest != attrs.get("checkpoint_sha256"):
                problems.append(
                    f"checkpoint sha256 mismatch: {checkpoint_path} has {digest!r}, {path.name} "
                    f"was scored with {attrs.get('checkpoint_sha256')!r}; pass the checkpoint "
                    "the cache was scored with, or rescore the teacher with this one")
    return problems


def info(path: str | Path) -> dict[str, Any]:
    """Summary of a cache: schema, provenance attributes, shapes, dtypes, chunking, layout,
    on-disk size (including virtual sources) and bytes per caption."""
    path = Path(path)
    with open_checked(path, schema=SCHEMA, version=READABLE_VERSIONS, what="teacher cache",
                      fix=RESCORE) as handle:
        attrs = plain_attrs(handle)
        datasets = {}
        for name in REQUIRED_DATASETS + V2_DATASETS:
            if name in handle:
                ds = handle[name]
                datasets[name] = {"shape": list(ds.shape), "dtype": str(ds.dtype),
                                  "chunks": list(ds.chunks) if ds.chunks else None,
                                  "virtual": bool(ds.is_virtual)}
        sources = virtual_sources(handle, path.parent)
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
