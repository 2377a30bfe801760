"""Retrieval metrics (method §7): text→video and video→text recall at K, median and mean rank.

Ranks use the pessimistic tie rule ``rank = 1 + #(other candidates scoring >= the positive)``, so
a collapsed model that scores everything alike ranks last rather than first (the official
``compute_metrics`` counts a tied row several times instead). Without ties the numbers equal the
official ones. Everything is vectorised over queries and processed in row chunks so a 27k×3k test
matrix never needs a second full-size boolean copy.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

T2V_KS = (1, 5, 10, 50)
V2T_KS = (1, 5, 10, 50)
# Elements per comparison chunk (rows × columns): bounds the temporary boolean matrix.
_CHUNK_ELEMENTS = 1 << 24


def _to_numpy(sim: np.ndarray | torch.Tensor) -> np.ndarray:
    if isinstance(sim, torch.Tensor):
        sim = sim.detach().cpu()
        if sim.dtype not in (torch.float32, torch.float64):
            sim = sim.float()
        return sim.numpy()
    arr = np.asarray(sim)
    if arr.dtype not in (np.float32, np.float64):
        arr = arr.astype(np.float32)
    return arr


def _check_finite(sim: np.ndarray) -> None:
    """NaN scores make every comparison false and silently rank the positive first: refuse."""
    nan_rows = np.isnan(sim).any(axis=1)
    if nan_rows.any():
        row = int(np.flatnonzero(nan_rows)[0])
        col = int(np.flatnonzero(np.isnan(sim[row]))[0])
        raise ValueError(
            f"similarity matrix contains NaN ({int(np.isnan(sim).sum())} entries); first at "
            f"text row {row}, video column {col}"
        )


def _ranks(scores: np.ndarray, positive_col: np.ndarray) -> np.ndarray:
    """1-based rank of each row's positive column under the ``>=`` tie rule, chunked by rows."""
    n_rows, n_cols = scores.shape
    ranks = np.empty(n_rows, dtype=np.int64)
    step = max(1, _CHUNK_ELEMENTS // max(1, n_cols))
    for start in range(0, n_rows, step):
        block = scores[start : start + step]
        pos = block[np.arange(block.shape[0]), positive_col[start : start + step]]
        # The positive compares >= with itself, which supplies the "1 +".
        ranks[start : start + step] = (block >= pos[:, None]).sum(axis=1)
    return ranks


def _summary(ranks: np.ndarray, ks: tuple[int, ...], prefix: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k in ks:
        out[f"{prefix}R{k}"] = float(100.0 * np.mean(ranks <= k))
    out[f"{prefix}MedianR"] = float(np.median(ranks))
    out[f"{prefix}MeanR"] = float(np.mean(ranks))
    out[f"{prefix}ranks"] = ranks
    out[f"{prefix}n_queries"] = int(ranks.shape[0])
    return out


def _group_max(sim: np.ndarray, text_video: np.ndarray, groups: np.ndarray) -> np.ndarray:
    """[n_groups, Nv]: for each caption group (the captions of one video, in ``groups`` order),
    the max over its captions of the score against every video. Chunked over columns."""
    order = np.argsort(text_video, kind="stable")
    sorted_video = text_video[order]
    starts = np.searchsorted(sorted_video, groups, side="left")
    n_rows, n_cols = sim.shape
    out = np.empty((groups.shape[0], n_cols), dtype=sim.dtype)
    step = max(1, _CHUNK_ELEMENTS // max(1, n_rows))
    for c0 in range(0, n_cols, step):
        block = sim[order, c0 : c0 + step]
        out[:, c0 : c0 + step] = np.maximum.reduceat(block, starts, axis=0)
    return out


def retrieval_metrics(
    sim: np.ndarray | torch.Tensor, text_video: np.ndarray | torch.Tensor | list[int]
) -> dict[str, Any]:
    """Text→video and video→text metrics of a caption × video score matrix.

    ``sim`` [Nt,Nv]: rows = captions, columns = videos (higher = more similar). ``text_video``
    [Nt]: the column of each caption's own video. Returns ``R1, R5, R10, R50`` (percent),
    ``MedianR``, ``MeanR``, ``ranks`` (int64 [Nt], 1-based), ``n_queries`` for text→video, and
    the same with a ``v2t_`` prefix for video→text. Video→text queries are the videos that have at
    least one caption; the candidates are the caption groups (each video's captions, scored by
    their max), so a video with 20 captions is not rewarded for any one of them. Videos without a
    caption are skipped as v2t queries and candidates (``v2t_n_queries`` says how many remain);
    if no video has a caption the ``v2t_`` keys are absent.
    """
    scores = _to_numpy(sim)
    if scores.ndim != 2:
        raise ValueError(f"similarity matrix must be 2-D [texts, videos], got {scores.shape}")
    if isinstance(text_video, torch.Tensor):
        text_video = text_video.detach().cpu().numpy()
    tv = np.asarray(text_video)
    n_text, n_video = scores.shape
    if tv.shape != (n_text,):
        raise ValueError(f"text_video must have shape ({n_text},), got {tv.shape}")
    if n_text == 0 or n_video == 0:
        raise ValueError(f"empty similarity matrix {scores.shape}")
    if not np.issubdtype(tv.dtype, np.integer):
        raise ValueError(f"text_video must hold integer column indices, got dtype {tv.dtype}")
    tv = tv.astype(np.int64)
    bad = (tv < 0) | (tv >= n_video)
    if bad.any():
        row = int(np.flatnonzero(bad)[0])
        raise ValueError(f"text_video[{row}] = {int(tv[row])} is outside [0, {n_video})")
    _check_finite(scores)

    out = _summary(_ranks(scores, tv), T2V_KS, "")
    groups = np.unique(tv)  # videos with at least one caption, ascending
    grouped = _group_max(scores, tv, groups)  # [n_groups, Nv]
    # Queries: videos with captions; candidates: groups. Row g of ``queries`` is video groups[g],
    # whose positive group is g itself.
    queries = np.ascontiguousarray(grouped[:, groups].T)  # [n_query_videos, n_groups]
    v2t = _ranks(queries, np.arange(groups.shape[0]))
    out.update(_summary(v2t, V2T_KS, "v2t_"))
    return out
