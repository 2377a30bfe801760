"""Retrieval index: one L2-normalised student embedding per video, and exact text search over it.

Why this is cheap: the TeachCLIP student keeps CLIP4Clip's single vector per video (method §2.5),
so serving is one text-tower forward plus a dot product against ``embeddings.h5``; the heavy
teachers never run at query time. Only single-vector models (kind ``student``: students and
baselines) can be indexed; a teacher's cross-grained score is not a dot product.

Schema ``teachclip.embeddings`` version 1:

=================  ====================  ===================================================
dataset            dtype / shape         meaning
=================  ====================  ===================================================
``video_ids``      vlen utf-8 [N]        row order of ``video_emb``
``video_emb``      float16|float32 [N,D] L2-normalised video embeddings
``failed_ids``     vlen utf-8 [K]        videos that could not be embedded (never zero-filled)
``failed_reasons`` vlen utf-8 [K]        why, one line each
=================  ====================  ===================================================

Attributes: ``schema``, ``schema_version``, ``model_sha256``, ``model_kind``, ``model_role``,
``dim``, ``dtype``, ``source`` (``frames`` | ``videos``), ``frames_digest`` (empty for
``videos``), ``split``, ``package_version``, plus the frames policy for ``videos``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import torch

from pipeline import __version__
from pipeline.atomic import atomic_output
from pipeline.data.manifest import SPLITS, Manifest
from pipeline.errors import DataIntegrityError, InputError, MismatchError
from pipeline.eval.evaluate import encode_all_videos
from pipeline.eval.model_eval import LoadedModel, check_frames_fit
from pipeline.h5schema import open_checked, plain_attrs
from pipeline.models.tokenizer import ClipTokenizer
from pipeline.precision import autocast_context

SCHEMA = "teachclip.embeddings"
SCHEMA_VERSION = 1
DTYPES = ("float16", "float32")
#: Index rows scored per block in :func:`top_k`: bounds memory to chunk_rows × D floats.
DEFAULT_CHUNK_ROWS = 65536


@dataclass
class EmbeddingIndex:
    """An opened ``embeddings.h5`` (embeddings kept in their stored dtype)."""

    path: Path
    video_ids: list[str]
    embeddings: np.ndarray  # [N, D] float16 or float32, L2-normalised
    attrs: dict[str, Any]
    failed: list[tuple[str, str]] = field(default_factory=list)

    @property
    def dim(self) -> int:
        return int(self.embeddings.shape[1])


@dataclass(frozen=True)
class SearchHit:
    """One ranked result."""

    rank: int
    video_id: str
    score: float


# ------------------------------------------------------------------------------ store
def write_index(
    path: str | Path,
    video_ids: Sequence[str],
    embeddings: np.ndarray,
    *,
    attrs: dict[str, Any],
    dtype: str = "float32",
    failed: Sequence[tuple[str, str]] = (),
) -> Path:
    """Write ``embeddings.h5`` atomically; rows are re-normalised and must be finite."""
    if dtype not in DTYPES:
        raise InputError(f"index dtype must be one of {DTYPES}, got {dtype!r}")
    ids = [str(v) for v in video_ids]
    emb = np.asarray(embeddings, dtype=np.float32)
    if emb.ndim != 2 or emb.shape[0] != len(ids):
        raise ValueError(f"embeddings shape {emb.shape} does not match {len(ids)} ids")
    if len(set(ids)) != len(ids):
        dup = next(v for v in ids if ids.count(v) > 1)
        raise InputError("duplicate video id in index", item_id=dup)
    bad = ~np.isfinite(emb).all(axis=1)
    if bad.any():
        raise InputError("non-finite embedding", item_id=ids[int(np.flatnonzero(bad)[0])])
    norms = np.linalg.norm(emb, axis=1, keepdims=True)
    emb = emb / np.maximum(norms, 1e-12)
    with atomic_output(path) as tmp, h5py.File(tmp, "w") as handle:
        handle.create_dataset("video_ids", data=np.array(ids, dtype=object),
                              dtype=h5py.string_dtype())
        # fletcher32: a damaged chunk fails its read instead of ranking garbage (docs/checks.md)
        handle.create_dataset("video_emb", data=emb.astype(dtype), fletcher32=True)
        handle.create_dataset("failed_ids", data=np.array([f[0] for f in failed], dtype=object),
                              dtype=h5py.string_dtype())
        handle.create_dataset("failed_reasons",
                              data=np.array([f[1] for f in failed], dtype=object),
                              dtype=h5py.string_dtype())
        handle.attrs["schema"] = SCHEMA
        handle.attrs["schema_version"] = SCHEMA_VERSION
        handle.attrs["dim"] = int(emb.shape[1])
        handle.attrs["dtype"] = dtype
        handle.attrs["package_version"] = __version__
        for key, value in attrs.items():
            handle.attrs[key] = value
    return Path(path)


def read_index(path: str | Path) -> EmbeddingIndex:
    """Open ``embeddings.h5`` (checks schema and shapes)."""
    path = Path(path)
    with open_checked(path, schema=SCHEMA, version=SCHEMA_VERSION,
                      what="embeddings index") as handle:
        attrs = plain_attrs(handle)
        ids = [str(v) for v in handle["video_ids"].asstr()[:]]
        try:
            emb = handle["video_emb"][:]
        except OSError as exc:
            raise DataIntegrityError(
                f"{path}: dataset 'video_emb' is damaged ({str(exc).splitlines()[0]}): rebuild "
                "the index (`teachclip index` or `teachclip embed`)") from None
        failed = list(zip(handle["failed_ids"].asstr()[:], handle["failed_reasons"].asstr()[:],
                          strict=True))
    if emb.shape != (len(ids), int(attrs["dim"])):
        raise MismatchError("video_emb shape", (len(ids), int(attrs["dim"])), emb.shape,
                            file=path)
    return EmbeddingIndex(path, ids, emb, attrs, [(str(a), str(b)) for a, b in failed])


# ------------------------------------------------------------------------------ search
def _as_float32(block: np.ndarray) -> np.ndarray:
    """float16 → float32 through torch: numpy's half conversion is ~10× slower (1M rows)."""
    block = np.asarray(block)
    if block.dtype == np.float16:
        return torch.from_numpy(np.ascontiguousarray(block)).float().numpy()
    return block.astype(np.float32, copy=False)


def top_k(
    embeddings: np.ndarray, queries: np.ndarray, k: int, chunk_rows: int = DEFAULT_CHUNK_ROWS
) -> tuple[np.ndarray, np.ndarray]:
    """Exact top-``k`` rows of ``embeddings`` for each query by dot product, block by block.

    Returns (scores float32 [Q,k'], rows int64 [Q,k']) with k' = min(k, N), best first; equal
    scores are ordered by row (deterministic). Each block keeps every candidate tied with its
    k-th score, so the merge is exact whatever the block size.
    """
    if k < 1:
        raise ValueError(f"top-k must be >= 1, got {k}")
    q = np.atleast_2d(np.asarray(queries, dtype=np.float32))
    n = embeddings.shape[0]
    k = min(k, n)
    best_scores = [np.empty(0, np.float32) for _ in range(len(q))]
    best_rows = [np.empty(0, np.int64) for _ in range(len(q))]
    for start in range(0, n, max(1, chunk_rows)):
        block = _as_float32(embeddings[start:start + chunk_rows])
        scores = q @ block.T  # [Q, rows]
        for i in range(len(q)):
            row_scores = scores[i]
            if row_scores.size > k:
                threshold = np.partition(row_scores, row_scores.size - k)[row_scores.size - k]
                keep = np.flatnonzero(row_scores >= threshold)
            else:
                keep = np.arange(row_scores.size)
            cand_s = np.concatenate([best_scores[i], row_scores[keep]])
            cand_r = np.concatenate([best_rows[i], keep.astype(np.int64) + start])
            order = np.lexsort((cand_r, -cand_s))[:k]
            best_scores[i], best_rows[i] = cand_s[order], cand_r[order]
    return np.stack(best_scores), np.stack(best_rows)


def require_single_vector(loaded: LoadedModel) -> None:
    """Only single-vector models (students, baselines) can serve a dot-product index."""
    if loaded.kind != "student":
        raise InputError(f"model kind {loaded.kind!r} has no single video vector (its score is "
                         "cross-grained): index a student or baseline model", file=loaded.path)


@torch.no_grad()
def encode_queries(loaded: LoadedModel, texts: Sequence[str], device: torch.device
                   ) -> np.ndarray:
    """L2-normalised query embeddings [Q, D] from the student's text tower."""
    require_single_vector(loaded)
    ids, mask = ClipTokenizer.default().encode(list(texts), loaded.max_words)
    feats = loaded.retriever.encode_text(torch.as_tensor(ids).to(device),
                                         torch.as_tensor(mask).to(device))
    return feats["embedding"].float().cpu().numpy()


def search(
    index: EmbeddingIndex,
    loaded: LoadedModel,
    query: str,
    top: int,
    device: torch.device,
    chunk_rows: int = DEFAULT_CHUNK_ROWS,
) -> list[SearchHit]:
    """Rank the index's videos for ``query``; the model must be the one that built the index."""
    if top < 1:
        raise InputError(f"--top-k must be at least 1, got {top}")
    expected = str(index.attrs.get("model_sha256", ""))
    if expected != loaded.sha256:
        raise MismatchError("model sha256", expected, loaded.sha256, file=index.path,
                            expected_in=f"{index.path} (the model it was built with)",
                            found_in=str(loaded.path),
                            fix="search with the model that built the index, or rebuild the "
                                "index with this model (`teachclip index`)")
    query_emb = encode_queries(loaded, [query], device)
    scores, rows = top_k(index.embeddings, query_emb, top, chunk_rows)
    return [SearchHit(rank + 1, index.video_ids[int(r)], float(s))
            for rank, (s, r) in enumerate(zip(scores[0], rows[0], strict=True))]


# ------------------------------------------------------------------------------ build
def model_attrs(loaded: LoadedModel) -> dict[str, Any]:
    """Index provenance describing the model."""
    return {"model_sha256": loaded.sha256, "model_kind": loaded.kind,
            "model_role": loaded.role, "max_words": loaded.max_words}


def index_from_frames(
    loaded: LoadedModel,
    frames: Any,
    device: torch.device,
    *,
    manifest: Manifest | None = None,
    split: str | None = None,
    batch_size: int = 64,
    amp: str = "none",
    on_progress: Callable[[int], None] | None = None,
) -> tuple[list[str], np.ndarray, dict[str, Any]]:
    """Embed the videos of frames.h5 (all, or one manifest split's) once each.

    Returns (video ids, embeddings float32 [N,D], provenance attrs for :func:`write_index`).
    """
    require_single_vector(loaded)
    check_frames_fit(loaded, frames)
    if split:
        if manifest is None:
            raise InputError("--split needs --manifest")
        if split not in SPLITS:
            raise InputError(f"unknown split {split!r}; expected one of {SPLITS}")
        present = set(frames.video_ids)
        video_ids = [v for v in manifest.split(split).videos["video_id"] if v in present]
    else:
        video_ids = list(frames.video_ids)
    if not video_ids:
        raise InputError("no videos to index", file=getattr(frames, "path", None))
    rows = np.array([frames.row_of(v) for v in video_ids], dtype=np.int64)
    feats = encode_all_videos(loaded.retriever, frames, rows, device, batch_size,
                              lambda: autocast_context(device, amp), on_progress)
    attrs = {**model_attrs(loaded), "source": "frames", "frames_digest": str(frames.digest),
             "split": split or "all"}
    return video_ids, feats["embedding"].cpu().numpy(), attrs
