"""Do a teacher cache's soft labels carry information? Diagnostics for ``teachclip cache info``.

Why: a cache costs hours of teacher scoring and the student then trains for hours against it, yet
two common failures leave the soft labels nearly empty while every integrity check passes:

* **uniform relevance** — the frame scores of a caption are (almost) equal, so
  ``R = softmax(relevance / T)`` is (almost) uniform and the fine-grained (AFA) loss only teaches
  "average the frames". Seen when the teacher's scores are small in magnitude (e.g. cosine
  similarities used at ``T = 1``).
* **one-hot matrix** — the teacher ranks every caption's own video first with nearly all the
  softmax mass, e.g. because it scored the very captions it was trained on. The soft labels are
  then the hard labels and distillation adds nothing over the contrastive loss.

:func:`diagnose` measures both by streaming the cache (``sim`` in row slabs of about
``STREAM_ELEMENTS`` values, each computed in float32; the whole matrix is never in memory: an
MSR-VTT cache is 180k × 9k float16, 3 GB) and :func:`cache_warnings` turns the numbers into
warnings. Only rows whose block is flagged in ``rows_done`` count, so an unfinished cache is
diagnosed over its finished rows. Library code only: the CLI prints.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from pipeline.cache.schema import (
    READABLE_VERSIONS,
    RESCORE,
    SCHEMA,
    STREAM_ELEMENTS,
    CacheIntegrityError,
    block_rows_ranges,
    virtual_sources,
)
from pipeline.errors import InputError
from pipeline.h5schema import open_checked

#: Mean normalised relevance entropy at or above which R counts as nearly uniform.
UNIFORM_ENTROPY = 0.98
#: R@1 (percent) at or above which, together with :data:`ONE_HOT_MASS`, ``sim`` is nearly one-hot.
ONE_HOT_R1 = 95.0
#: Mean softmax probability of the positive at or above which (with R@1) ``sim`` is nearly one-hot.
ONE_HOT_MASS = 0.9
#: Percentiles of the normalised entropy reported besides mean and median.
PERCENTILES = (10, 90)
_DATASETS = ("caption_video", "sim", "relevance", "frame_mask", "rows_done")
_VERIFY = "run `teachclip cache verify` on it for details"


@dataclass
class RelevanceStats:
    """Spread of ``R = softmax(relevance / T)`` over each caption's valid frames.

    ``entropy_*`` are of ``H(R) / log(n_valid)`` (1 = uniform, 0 = one frame), over the
    ``n_rows`` captions with at least two valid frames; ``top_frame_mass`` is the mean of
    ``max R`` and ``uniform_share`` the mean of ``1 / n_valid`` over the same captions, so the
    two read together: equal means no frame stands out.
    """

    n_rows: int
    entropy_mean: float
    entropy_median: float
    entropy_p10: float
    entropy_p90: float
    top_frame_mass: float
    uniform_share: float


@dataclass
class RankingStats:
    """Where each caption's own video ranks in its row of the cached ``sim``.

    Ranks use the pessimistic tie rule of :mod:`pipeline.eval.metrics`,
    ``rank = 1 + #(other videos scoring >= the positive)``: float16 scores tie often, and a tie
    must not make a teacher look surer than it is. ``positive_mass`` is the mean over captions of
    the positive's softmax probability over its whole row of ``sim`` as stored (λ-scaled logits,
    the distribution the coarse loss distils). A training batch sees only B of the Nv columns, so
    there the positive's share is at least this large: the one-hot warning is conservative.
    """

    n_rows: int
    r1: float
    r5: float
    median_rank: float
    positive_mass: float


@dataclass
class CacheDiagnostics:
    """What :func:`diagnose` measured, over ``rows_counted`` of ``n_captions`` captions.

    ``rows_done`` captions lie in finished blocks; of those, ``rows_invalid`` (NaN/inf scores or
    an empty frame mask: ``teachclip cache verify`` names them) are left out of everything and
    ``rows_single_frame`` (one valid frame: R is 1 whatever the teacher thinks) out of the
    relevance statistics. A statistic is None when no caption qualifies.
    """

    n_captions: int
    rows_done: int
    rows_counted: int
    rows_invalid: int
    rows_single_frame: int
    blocks_done: int
    n_blocks: int
    relevance_temperature: float
    relevance: RelevanceStats | None
    ranking: RankingStats | None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form, with the warnings of :func:`cache_warnings` under ``warnings``."""
        return {**asdict(self), "warnings": cache_warnings(self)}


def cache_warnings(diag: CacheDiagnostics) -> list[str]:
    """Warnings (one sentence each, no file name) for soft labels that carry little signal."""
    out: list[str] = []
    rel, rank = diag.relevance, diag.ranking
    if rel is not None and rel.entropy_mean >= UNIFORM_ENTROPY:
        out.append(
            f"frame relevance is nearly uniform (mean normalised entropy {rel.entropy_mean:.3f} "
            f">= {UNIFORM_ENTROPY} at T={diag.relevance_temperature:g}; top-frame mass "
            f"{rel.top_frame_mass:.3f} vs uniform share {rel.uniform_share:.3f}): the fine "
            "(frame) loss will carry almost no signal; sharpen it with a lower relevance "
            "temperature at student train, e.g. `--relevance-temperature 0.1` or 0.01 (preview "
            "it here with the same option)")
    if rank is not None and rank.r1 >= ONE_HOT_R1 and rank.positive_mass >= ONE_HOT_MASS:
        out.append(
            f"the teacher matrix is nearly one-hot (R@1 {rank.r1:.1f} % >= {ONE_HOT_R1:g} %, "
            f"positive mass {rank.positive_mass:.3f} >= {ONE_HOT_MASS}): the soft labels are "
            "close to the hard labels, e.g. because the teacher scored its own training set; "
            "use cross-fitted teachers (each scoring captions it was not trained on)")
    return out


def diagnose(path: str | Path, *, relevance_temperature: float = 1.0,
             read_rows: int | None = None) -> CacheDiagnostics:
    """Relevance entropy and positive ranking of the finished rows of the cache at ``path``.

    ``relevance_temperature`` T divides the stored pre-softmax relevance before the softmax
    (1 = the official reading, ``softmax(relevance)``); it replaces the cache's
    ``relevance_temperature`` attribute, which the scorer writes as 1. ``read_rows`` is the slab
    height (default: about ``STREAM_ELEMENTS`` values of ``sim``, chunk aligned); the numbers do
    not depend on it. Damaged or inconsistent files raise InputError / CacheIntegrityError
    naming the file.
    """
    if not relevance_temperature > 0 or not math.isfinite(relevance_temperature):
        raise ValueError(f"relevance_temperature must be finite and > 0, got "
                         f"{relevance_temperature!r}")
    path = Path(path)
    with open_checked(path, schema=SCHEMA, version=READABLE_VERSIONS, what="teacher cache",
                      fix=RESCORE) as handle:
        block_rows = _check_structure(handle, path)
        done = np.asarray(_read(handle, "rows_done", path, slice(None)), dtype=bool)
        n_c = int(handle["caption_video"].shape[0])
        ranges = block_rows_ranges(np.flatnonzero(done).tolist(), block_rows, n_c)
        acc = _Accumulator()
        for start, stop in _slabs(handle, ranges, read_rows):
            acc.add(*_read_slab(handle, path, start, stop), relevance_temperature)
    return CacheDiagnostics(
        n_captions=n_c, rows_done=sum(e - s for s, e in ranges), rows_counted=acc.n_counted,
        rows_invalid=acc.n_invalid, rows_single_frame=acc.n_single, blocks_done=int(done.sum()),
        n_blocks=int(done.size), relevance_temperature=float(relevance_temperature),
        relevance=acc.relevance(), ranking=acc.ranking())


def _check_structure(handle: h5py.File, path: Path) -> int:
    """The ``block_rows`` attribute, after checking what the diagnostics index by is consistent
    (a malformed file must be a clean error, not an IndexError deep in numpy)."""
    missing = [name for name in _DATASETS if name not in handle]
    if missing:
        raise InputError(f"teacher cache lacks dataset(s) {', '.join(missing)}; {_VERIFY}",
                         file=path)
    block_rows = int(handle.attrs.get("block_rows", 0) or 0)
    n_c = handle["caption_video"].shape[0]
    sim, rel, mask = handle["sim"], handle["relevance"], handle["frame_mask"]
    shapes_ok = (block_rows > 0 and sim.ndim == 2 and sim.shape[0] == n_c and rel.ndim == 2
                 and rel.shape[0] == n_c and mask.shape == rel.shape
                 and handle["rows_done"].shape == (math.ceil(n_c / block_rows),))
    if not shapes_ok:
        raise InputError(f"teacher cache has inconsistent shapes or block_rows; {_VERIFY}",
                         file=path)
    for name, resolved in virtual_sources(handle, path.parent):
        if not resolved.is_file():
            raise InputError(f"virtual dataset source {name!r} missing (expected at {resolved}): "
                             "keep the shard files beside the merged cache", file=path)
    cols = np.asarray(_read(handle, "caption_video", path, slice(None)))
    if cols.size and (cols.min() < 0 or cols.max() >= sim.shape[1]):
        raise InputError(f"caption_video holds a column outside [0, {sim.shape[1]}); {_VERIFY}",
                         file=path)
    return block_rows


def _read(handle: h5py.File, name: str, path: Path, rows: slice) -> np.ndarray:
    """Rows of one dataset; a chunk failing its checksum becomes an error naming the file."""
    try:
        return handle[name][rows]
    except OSError as exc:
        where = "" if rows == slice(None) else f" rows {rows.start}..{rows.stop - 1}"
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise CacheIntegrityError(f"{path}: {name}{where} cannot be read (damaged on disk; HDF5: "
                                  f"{reason}); {_VERIFY}, then {RESCORE}") from None


def _slabs(handle: h5py.File, ranges: list[tuple[int, int]], read_rows: int | None
           ) -> Iterator[tuple[int, int]]:
    """[start, stop) slabs covering ``ranges``: ``read_rows`` high, or about STREAM_ELEMENTS
    values rounded to whole ``sim`` chunks (a chunk is checked whole whenever any of it is read)."""
    if read_rows is None:
        n_cols = max(1, int(handle["sim"].shape[1]))
        chunk_rows = handle["sim"].chunks[0] if handle["sim"].chunks else 1
        step = max(1, STREAM_ELEMENTS // n_cols)
        read_rows = max(chunk_rows, step - step % chunk_rows)
    if read_rows < 1:
        raise ValueError(f"read_rows must be >= 1, got {read_rows}")
    for start, stop in ranges:
        for s0 in range(start, stop, read_rows):
            yield s0, min(s0 + read_rows, stop)


def _read_slab(handle: h5py.File, path: Path, start: int, stop: int
               ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(sim float32, positive columns, relevance, frame_mask) of rows [start, stop)."""
    rows = slice(start, stop)
    sim = _read(handle, "sim", path, rows).astype(np.float32)
    cols = np.asarray(_read(handle, "caption_video", path, rows), dtype=np.int64)
    rel = np.asarray(_read(handle, "relevance", path, rows), dtype=np.float64)
    mask = np.asarray(_read(handle, "frame_mask", path, rows), dtype=bool)
    return sim, cols, rel, mask


def positive_ranking(sim: np.ndarray, cols: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(rank, softmax probability) of each row's positive column ``cols`` in float32 ``sim``.

    Pessimistic ties (see :class:`RankingStats`); the probability comes from a max-shifted
    log-sum-exp, so λ-scaled logits of a few hundred do not overflow.
    """
    pos = sim[np.arange(sim.shape[0]), cols]
    ranks = (sim >= pos[:, None]).sum(axis=1)
    top = sim.max(axis=1)
    lse = top + np.log(np.exp(sim - top[:, None]).sum(axis=1))
    return ranks, np.exp(pos - lse)


def relevance_spread(rel: np.ndarray, mask: np.ndarray, temperature: float
                     ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(normalised entropy, max probability, n_valid) of ``softmax(rel / T)`` over each row's
    masked-in frames; entropy and max are NaN where fewer than two frames are valid."""
    n_valid = mask.sum(axis=1)
    x = np.where(mask, rel / temperature, -np.inf)
    top = x.max(axis=1, initial=-np.inf, where=mask)
    shifted = np.where(mask, x - np.where(np.isfinite(top), top, 0.0)[:, None], -np.inf)
    log_z = np.log(np.exp(shifted).sum(axis=1))
    log_p = np.where(mask, shifted - log_z[:, None], 0.0)
    p = np.where(mask, np.exp(log_p), 0.0)
    entropy = -(p * log_p).sum(axis=1)
    ok = n_valid >= 2
    norm = np.full(rel.shape[0], np.nan)
    norm[ok] = entropy[ok] / np.log(n_valid[ok])
    top_mass = np.where(ok, p.max(axis=1), np.nan)
    return norm, top_mass, n_valid


class _Accumulator:
    """Per-caption values of every slab; summaries at the end (per-caption arrays are small:
    a few bytes per caption, against Nv × 2 bytes per caption for ``sim``)."""

    def __init__(self) -> None:
        self.ranks: list[np.ndarray] = []
        self.mass: list[np.ndarray] = []
        self.entropy: list[np.ndarray] = []
        self.top: list[np.ndarray] = []
        self.share: list[np.ndarray] = []
        self.n_counted = self.n_invalid = self.n_single = 0

    def add(self, sim: np.ndarray, cols: np.ndarray, rel: np.ndarray, mask: np.ndarray,
            temperature: float) -> None:
        """Fold in one slab, leaving out rows whose scores are NaN/inf or whose mask is empty."""
        valid = (np.isfinite(sim).all(axis=1) & mask.any(axis=1)
                 & (np.isfinite(rel) | ~mask).all(axis=1))
        self.n_invalid += int((~valid).sum())
        self.n_counted += int(valid.sum())
        if not valid.all():  # (a copy of the slab: only when something must go)
            sim, cols, rel, mask = sim[valid], cols[valid], rel[valid], mask[valid]
        ranks, mass = positive_ranking(sim, cols)
        self.ranks.append(ranks)
        self.mass.append(mass)
        norm, top, n_valid = relevance_spread(rel, mask, temperature)
        multi = n_valid >= 2
        self.n_single += int((~multi).sum())
        self.entropy.append(norm[multi])
        self.top.append(top[multi])
        self.share.append(1.0 / n_valid[multi])

    def ranking(self) -> RankingStats | None:
        ranks = np.concatenate(self.ranks) if self.ranks else np.zeros(0, np.int64)
        if ranks.size == 0:
            return None
        return RankingStats(n_rows=int(ranks.size), r1=float(100.0 * np.mean(ranks <= 1)),
                            r5=float(100.0 * np.mean(ranks <= 5)),
                            median_rank=float(np.median(ranks)),
                            positive_mass=float(np.mean(np.concatenate(self.mass))))

    def relevance(self) -> RelevanceStats | None:
        entropy = np.concatenate(self.entropy) if self.entropy else np.zeros(0)
        if entropy.size == 0:
            return None
        p10, p90 = np.percentile(entropy, PERCENTILES)
        return RelevanceStats(n_rows=int(entropy.size), entropy_mean=float(entropy.mean()),
                              entropy_median=float(np.median(entropy)), entropy_p10=float(p10),
                              entropy_p90=float(p90),
                              top_frame_mass=float(np.mean(np.concatenate(self.top))),
                              uniform_share=float(np.mean(np.concatenate(self.share))))
