"""Soft-label diagnostics of ``teachclip cache info`` (:mod:`pipeline.cache.diagnostics`).

Every cache here is written by the project's own :class:`TeacherCacheWriter` from hand-made
numbers whose answers are computed independently in the test (plain numpy softmax / entropy /
rank), never with the functions under test.
"""

from __future__ import annotations

import json
from pathlib import Path

import h5py
import numpy as np
import pytest
from click.testing import CliRunner

import pipeline.cache.diagnostics as diagnostics
from pipeline.cache.diagnostics import (
    ONE_HOT_MASS,
    ONE_HOT_R1,
    UNIFORM_ENTROPY,
    cache_warnings,
    diagnose,
)
from pipeline.cache.schema import CacheIntegrityError, CacheMeta
from pipeline.cache.writer import TeacherCacheWriter
from pipeline.errors import InputError
from stages.cli import main
from tests.integrity_fixtures import flip_byte


def _write(path: Path, sim: np.ndarray, rel: np.ndarray, mask: np.ndarray | None = None,
           caption_video: np.ndarray | None = None, *, block_rows: int = 2,
           finalize: bool = True) -> Path:
    """A cache of the given rows (all blocks written); the tmp file when not ``finalize``."""
    sim, rel = np.asarray(sim, np.float32), np.asarray(rel, np.float32)
    n_c, n_v = sim.shape
    n_f = rel.shape[1]
    mask = np.ones((n_c, n_f), bool) if mask is None else np.asarray(mask, bool)
    cols = np.arange(n_c) % n_v if caption_video is None else np.asarray(caption_video)
    meta = CacheMeta(teacher_kind="xclip", checkpoint_sha256="0" * 64, frames_digest="fd",
                     manifest_digest="md", max_words=32, max_frames=n_f, logit_scale=100.0)
    writer = TeacherCacheWriter(path, caption_ids=[f"cap{i}" for i in range(n_c)],
                                video_ids=[f"vid{i}" for i in range(n_v)], caption_video=cols,
                                meta=meta, block_rows=block_rows)
    for b in writer.pending_blocks():
        s, e = writer.block_range(b)
        writer.write_block(b, sim[s:e], rel[s:e], mask[s:e])
    if finalize:
        return writer.finalize()
    writer.close()
    return writer.tmp_path


def _norm_entropy(logits: list[float]) -> tuple[float, float]:
    """(H(p) / log n, max p) of p = softmax(logits), by the textbook formula in float64."""
    x = np.asarray(logits, np.float64)
    p = np.exp(x - x.max())
    p /= p.sum()
    h = -sum(float(q * np.log(q)) for q in p if q > 0)
    return h / np.log(len(x)), float(p.max())


def _informative(seed: int = 0, n_c: int = 23, n_v: int = 9, n_f: int = 6
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Random but informative soft labels: moderate logits, peaked relevance, ragged masks."""
    rng = np.random.default_rng(seed)
    sim = (rng.normal(size=(n_c, n_v)) * 3).astype(np.float32)
    rel = (rng.normal(size=(n_c, n_f)) * 3).astype(np.float32)
    mask = rng.random((n_c, n_f)) > 0.3
    mask[:, :2] = True
    return sim, rel, mask, rng.integers(0, n_v, n_c)


# ------------------------------------------------------------------------- relevance entropy
def test_relevance_entropy_known_rows(tmp_path: Path) -> None:
    rel = np.array([[3.0, 3.0, 3.0, 3.0],     # all equal: entropy 1, max p 1/4
                    [60.0, 0.0, 0.0, 0.0],    # one huge logit: entropy ~0, max p ~1
                    [2.0, 0.0, 5.0, 5.0],     # masked to its first 2 frames: [2, 0]
                    [1.0, 0.0, 0.0, 0.0]])    # single valid frame: skipped
    mask = np.array([[1, 1, 1, 1], [1, 1, 1, 1], [1, 1, 0, 0], [1, 0, 0, 0]], bool)
    diag = diagnose(_write(tmp_path / "c.h5", np.zeros((4, 3)), rel, mask))
    expected = [_norm_entropy([3.0] * 4), _norm_entropy([60.0, 0, 0, 0]),
                _norm_entropy([2.0, 0.0])]
    ent = [e for e, _ in expected]
    assert ent[0] == pytest.approx(1.0) and ent[1] < 1e-20
    r = diag.relevance
    assert r is not None and r.n_rows == 3 and diag.rows_single_frame == 1
    assert r.entropy_mean == pytest.approx(np.mean(ent), abs=1e-9)
    assert r.entropy_median == pytest.approx(ent[2], abs=1e-9)
    assert r.entropy_p10 == pytest.approx(np.percentile(ent, 10), abs=1e-9)
    assert r.entropy_p90 == pytest.approx(np.percentile(ent, 90), abs=1e-9)
    assert r.top_frame_mass == pytest.approx(np.mean([m for _, m in expected]), abs=1e-9)
    assert r.uniform_share == pytest.approx(np.mean([1 / 4, 1 / 4, 1 / 2]))


def test_relevance_temperature_divides_the_logits(tmp_path: Path) -> None:
    path = _write(tmp_path / "c.h5", np.zeros((2, 2)), [[1.0, 0.0, -1.0], [0.5, 0.0, 0.0]])
    for temperature in (1.0, 0.5, 0.1):
        want = [_norm_entropy([1.0 / temperature, 0.0, -1.0 / temperature]),
                _norm_entropy([0.5 / temperature, 0.0, 0.0])]
        rel = diagnose(path, relevance_temperature=temperature).relevance
        assert rel is not None
        assert rel.entropy_mean == pytest.approx(np.mean([e for e, _ in want]), abs=1e-9)
        assert rel.top_frame_mass == pytest.approx(np.mean([m for _, m in want]), abs=1e-9)
    assert (diagnose(path, relevance_temperature=0.1).relevance.entropy_mean
            < diagnose(path).relevance.entropy_mean - 0.3)
    with pytest.raises(ValueError, match="relevance_temperature"):
        diagnose(path, relevance_temperature=0.0)


# ------------------------------------------------------------------------- ranking
def test_ranking_of_known_positives(tmp_path: Path) -> None:
    # Positives (diagonal) rank 1, 1, 1 and 3; values are exact in float16.
    sim = np.array([[4.0, 1.0, 0.0, 0.0],
                    [0.0, 2.0, 1.0, -1.0],
                    [0.0, 0.0, 8.0, 0.0],
                    [5.0, 0.0, 3.0, 1.0]])
    diag = diagnose(_write(tmp_path / "c.h5", sim, np.zeros((4, 2)), caption_video=[0, 1, 2, 2]))
    rank = diag.ranking
    assert rank is not None and rank.n_rows == 4
    assert rank.r1 == pytest.approx(75.0) and rank.r5 == pytest.approx(100.0)
    assert rank.median_rank == 1.0
    probs = np.exp(sim) / np.exp(sim).sum(axis=1, keepdims=True)
    assert rank.positive_mass == pytest.approx(np.mean(probs[[0, 1, 2, 3], [0, 1, 2, 2]]),
                                               rel=1e-5)


def test_ties_rank_pessimistically(tmp_path: Path) -> None:
    sim = np.array([[2.0, 2.0, 0.0], [1.0, 1.0, 1.0], [0.0, 0.0, 7.0]])
    rank = diagnose(_write(tmp_path / "c.h5", sim, np.zeros((3, 2)))).ranking
    # ranks 2 (tied with one), 3 (tied with all), 1
    assert rank.r1 == pytest.approx(100 / 3) and rank.median_rank == 2.0


def test_positive_mass_of_large_lambda_scaled_logits(tmp_path: Path) -> None:
    """Logits of several hundred (λ = 100 times a cosine) must not overflow the softmax."""
    sim = np.array([[300.0, 298.0, 200.0], [-50.0, 400.0, 399.0]])
    rank = diagnose(_write(tmp_path / "c.h5", sim, np.zeros((2, 2)))).ranking
    p0 = 1 / (1 + np.exp(-2.0) + np.exp(-100.0))
    p1 = 1 / (1 + np.exp(-1.0) + np.exp(-450.0))
    assert rank.positive_mass == pytest.approx((p0 + p1) / 2, rel=1e-5)


# ------------------------------------------------------------------------- warnings
def test_warnings_fire_only_for_empty_soft_labels(tmp_path: Path) -> None:
    sim, rel, mask, cols = _informative()
    informative = diagnose(_write(tmp_path / "good.h5", sim, rel, mask, cols))
    assert cache_warnings(informative) == []
    assert informative.relevance.entropy_mean < UNIFORM_ENTROPY

    uniform = diagnose(_write(tmp_path / "uniform.h5", sim, np.zeros_like(rel), mask, cols))
    (warning,) = cache_warnings(uniform)
    assert "nearly uniform" in warning and "--relevance-temperature" in warning
    assert "fine" in warning and "0.01" in warning
    # equal scores stay uniform at any T: the option cannot invent signal
    assert len(cache_warnings(diagnose(tmp_path / "uniform.h5", relevance_temperature=1e-3))) == 1
    n_c, n_v = sim.shape
    cols = np.arange(n_c) % n_v
    one_hot = np.zeros((n_c, n_v), np.float32)
    one_hot[np.arange(n_c), cols] = 100.0
    diag = diagnose(_write(tmp_path / "onehot.h5", one_hot, rel, mask, cols))
    assert diag.ranking.r1 >= ONE_HOT_R1 and diag.ranking.positive_mass >= ONE_HOT_MASS
    (warning,) = cache_warnings(diag)
    assert "one-hot" in warning and "cross-fitted" in warning and "hard labels" in warning

    # nor is a high mass while a tenth of the captions rank another video first (R@1 90 %)
    near = np.zeros((10, 10), np.float32)
    near[np.arange(10), np.arange(10)] = 100.0
    near[9, 0] = 101.0
    diag = diagnose(_write(tmp_path / "near.h5", near, rel[:10], mask[:10], np.arange(10)))
    assert diag.ranking.r1 == 90.0 and diag.ranking.positive_mass >= ONE_HOT_MASS
    assert cache_warnings(diag) == []

    # R@1 100 % alone is not one-hot: positive 1 vs 0 leaves mass e / (e + 8) ≈ 0.25
    soft = np.zeros((n_c, n_v), np.float32)
    soft[np.arange(n_c), cols] = 1.0
    diag = diagnose(_write(tmp_path / "soft.h5", soft, rel, mask, cols))
    assert diag.ranking.r1 == 100.0 and cache_warnings(diag) == []


def test_uniform_threshold_is_inclusive_of_nearly_uniform(tmp_path: Path) -> None:
    """Tiny logit differences (cosine scores at T = 1) are nearly, not exactly, uniform."""
    rng = np.random.default_rng(1)
    rel = (rng.normal(size=(10, 12)) * 0.05).astype(np.float32)
    path = _write(tmp_path / "c.h5", np.eye(10, 5) * 3, rel)
    diag = diagnose(path)
    assert UNIFORM_ENTROPY <= diag.relevance.entropy_mean < 1.0
    assert len(cache_warnings(diag)) == 1
    assert cache_warnings(diagnose(path, relevance_temperature=0.01)) == []


# ------------------------------------------------------------------------- scope and streaming
def test_only_finished_blocks_count(tmp_path: Path) -> None:
    # block_rows 2: blocks 0 and 2 rank their positives first, block 1 third.
    sim = np.array([[9.0, 0, 0], [0, 9.0, 0], [0, 5.0, 1.0], [5.0, 7.0, 1.0],
                    [9.0, 0, 0], [0, 9.0, 0]])
    tmp = _write(tmp_path / "c.h5", sim, np.zeros((6, 2)), caption_video=[0, 1, 2, 2, 0, 1],
                 finalize=False)
    assert diagnose(tmp).ranking.r1 == pytest.approx(4 / 6 * 100)
    with h5py.File(tmp, "r+") as handle:
        handle["rows_done"][1] = False
    diag = diagnose(tmp)
    assert (diag.rows_done, diag.rows_counted, diag.blocks_done, diag.n_blocks) == (4, 4, 2, 3)
    assert diag.ranking.r1 == 100.0 and diag.ranking.n_rows == 4

    result = CliRunner().invoke(main, ["cache", "info", str(tmp)])
    assert result.exit_code == 0, result.output
    assert "diagnostics over the 4 captions of 2/3 finished blocks (of 6)" in result.stdout


def test_non_finite_rows_are_left_out(tmp_path: Path) -> None:
    sim, rel, mask, cols = _informative(n_c=6)
    path = _write(tmp_path / "c.h5", sim, rel, mask, cols)
    full = diagnose(path)
    with h5py.File(path, "r+") as handle:
        handle["sim"][3, 0] = np.float16(np.nan)
    diag = diagnose(path)
    assert (diag.rows_counted, diag.rows_invalid) == (5, 1)
    keep = [0, 1, 2, 4, 5]
    ranks = (sim[keep] >= sim[keep, cols[keep]][:, None]).sum(axis=1)
    assert diag.ranking.r1 == pytest.approx(100 * np.mean(ranks == 1))
    assert diag.ranking.n_rows == 5 and diag.relevance.n_rows == 5 and full.ranking.n_rows == 6
    s16 = sim[keep].astype(np.float16).astype(np.float64)
    mass = np.exp(s16[np.arange(5), cols[keep]]) / np.exp(s16).sum(axis=1)
    assert diag.ranking.positive_mass == pytest.approx(mass.mean(), rel=1e-5)


def _reference(sim: np.ndarray, rel: np.ndarray, mask: np.ndarray, cols: np.ndarray
               ) -> dict[str, float]:
    """Whole-matrix numbers from the float16-rounded scores, row by row in float64."""
    s16 = sim.astype(np.float16).astype(np.float64)
    pos = s16[np.arange(len(cols)), cols]
    ranks = (s16 >= pos[:, None]).sum(axis=1)
    mass = np.exp(pos) / np.exp(s16).sum(axis=1)
    ent = [_norm_entropy(list(r[m]))[0] for r, m in zip(rel, mask, strict=True)]
    return {"r1": 100 * np.mean(ranks == 1), "r5": 100 * np.mean(ranks <= 5),
            "median_rank": float(np.median(ranks)), "positive_mass": float(mass.mean()),
            "entropy_mean": float(np.mean(ent)), "entropy_p90": float(np.percentile(ent, 90))}


def test_tiny_read_slabs_give_the_same_numbers(tmp_path: Path, monkeypatch: pytest.MonkeyPatch
                                               ) -> None:
    sim, rel, mask, cols = _informative(seed=3)
    path = _write(tmp_path / "c.h5", sim, rel, mask, cols, block_rows=5)
    heights: list[int] = []
    real_read = diagnostics._read

    def spy(handle: h5py.File, name: str, p: Path, rows: slice) -> np.ndarray:
        out = real_read(handle, name, p, rows)
        if name == "sim":
            heights.append(out.shape[0])
        return out

    monkeypatch.setattr(diagnostics, "_read", spy)
    one = diagnose(path, read_rows=len(cols)).to_dict()
    assert heights == [len(cols)]  # finished blocks coalesce into one range
    for read_rows in (1, 2, 3, 7):
        heights.clear()
        assert diagnose(path, read_rows=read_rows).to_dict() == one
        assert max(heights) <= read_rows and sum(heights) == len(cols)
    monkeypatch.setattr(diagnostics, "STREAM_ELEMENTS", 2 * sim.shape[1])
    heights.clear()
    assert diagnose(path).to_dict() == one
    assert max(heights) == 5  # the default slab: at least one whole sim chunk (5 rows here)

    ref = _reference(sim, rel, mask, cols)
    got = {**one["ranking"], **one["relevance"]}
    for key, value in ref.items():
        assert got[key] == pytest.approx(value, rel=1e-5, abs=1e-9), key


# ------------------------------------------------------------------------- CLI and errors
def test_cli_prints_diagnostics_warnings_and_json(tmp_path: Path) -> None:
    sim, rel, mask, cols = _informative()
    path = _write(tmp_path / "c.h5", sim, np.zeros_like(rel), mask, cols)
    runner = CliRunner()
    result = runner.invoke(main, ["cache", "info", str(path)])
    assert result.exit_code == 0, result.output
    assert "diagnostics over all 23 captions" in result.stdout
    assert "normalised entropy mean 1.000" in result.stdout
    assert "top-frame mass" in result.stdout and "uniform share" in result.stdout
    assert "positive R@1" in result.stdout and "positive mass" in result.stdout
    assert result.stderr.startswith(f"Warning: {path}: frame relevance is nearly uniform")
    assert "Warning:" not in result.stdout

    result = runner.invoke(main, ["cache", "info", str(path), "--json",
                                  "--relevance-temperature", "0.5"])
    assert result.exit_code == 0, result.output
    diag = json.loads(result.stdout)["diagnostics"]
    assert diag["relevance_temperature"] == 0.5 and diag["rows_counted"] == 23
    assert diag["relevance"]["entropy_mean"] == pytest.approx(1.0)
    assert diag["ranking"]["r1"] == diagnose(path).ranking.r1
    assert len(diag["warnings"]) == 1 and "nearly uniform" in diag["warnings"][0]

    for args in (["--no-diagnostics"], ["--no-diagnostics", "--json"]):
        result = runner.invoke(main, ["cache", "info", str(path), *args])
        assert result.exit_code == 0, result.output
        assert result.stderr == ""
        assert "diagnostics over" not in result.stdout and "positive R@1" not in result.stdout
        assert '"diagnostics":' not in result.stdout and '"ranking":' not in result.stdout
    assert "23 captions × 9 videos" in runner.invoke(
        main, ["cache", "info", str(path), "--no-diagnostics"]).stdout
    result = runner.invoke(main, ["cache", "info", str(path), "--relevance-temperature", "0"])
    assert result.exit_code == 2


def test_cli_no_warning_for_an_informative_cache(tmp_path: Path) -> None:
    path = _write(tmp_path / "c.h5", *_informative())
    result = CliRunner().invoke(main, ["cache", "info", str(path)])
    assert result.exit_code == 0 and result.stderr == ""
    assert "relevance (T=1): normalised entropy" in result.stdout


def test_damaged_files_are_clean_errors(tmp_path: Path) -> None:
    sim, rel, mask, cols = _informative()
    path = _write(tmp_path / "c.h5", sim, rel, mask, cols, block_rows=5)
    flip_byte(path, "sim", 12)
    with pytest.raises(CacheIntegrityError, match=r"c\.h5: sim rows 0\.\.22 cannot be read"):
        diagnose(path)
    result = CliRunner().invoke(main, ["cache", "info", str(path)])
    assert result.exit_code == 1
    assert result.stderr.startswith(f"Error: {path}: sim rows")
    assert "teachclip cache verify" in result.stderr and "Traceback" not in result.output
    assert CliRunner().invoke(main, ["cache", "info", str(path),
                                     "--no-diagnostics"]).exit_code == 0

    other = tmp_path / "other.h5"
    with h5py.File(other, "w") as handle:
        handle.attrs["schema"] = "something.else"
    with pytest.raises(InputError, match="not a teacher cache") as info:
        diagnose(other)
    assert info.value.file == str(other)
    truncated = tmp_path / "truncated.h5"
    truncated.write_bytes(path.read_bytes()[:2000])
    with pytest.raises(InputError, match="cannot open teacher cache"):
        diagnose(truncated)
