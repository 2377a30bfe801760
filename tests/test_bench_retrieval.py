"""bench/retrieval.py at a tiny size: the table's rows, storage sizes and the cost ratios."""

from __future__ import annotations

import contextlib
import io
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench import retrieval  # noqa: E402
from pipeline.retrieval.index import top_k  # noqa: E402

D, F, L = 512, 12, 32


@pytest.fixture(scope="module")
def run() -> tuple[list[dict], str]:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        rows = retrieval.main(["--sizes", "1000,3000", "--queries", "30", "--storage",
                           "float16,float32", "--teacher-videos", "1000",
                           "--teacher-queries", "2", "--repeats", "3", "--threads", "1"])
    return rows, out.getvalue()


@pytest.fixture(scope="module")
def rows(run: tuple[list[dict], str]) -> list[dict]:
    return run[0]


def test_rows_cover_every_model_size_and_storage(run: tuple[list[dict], str]) -> None:
    rows, printed = run
    kinds = {r["model"] for r in rows}
    assert kinds == {"student (1 vector/video)", "xclip head", "ts2net head", "xpool head"}
    assert len(rows) == 2 * 2 * 4
    for row in rows:
        assert row["one_query_ms"] > 0 and row["batch_ms_per_query"] > 0
    assert "| student (1 vector/video) |" in printed and "teacher/student" in printed


def test_bytes_per_video_follow_the_feature_shapes(rows: list[dict]) -> None:
    got = {(r["model"], r["storage"]): r["bytes_per_video"] for r in rows}
    assert got[("student (1 vector/video)", "float16")] == D * 2
    assert got[("student (1 vector/video)", "float32")] == D * 4
    # X-CLIP: v̄ [D] + f̂ [F,D] + a one-byte frame mask.
    assert got[("xclip head", "float16")] == (1 + F) * D * 2 + F
    # X-Pool: keys, values and W_lin values per frame + mask.
    assert got[("xpool head", "float32")] == 3 * F * D * 4 + F


def test_teachers_cost_more_per_query_than_the_student(rows: list[dict]) -> None:
    for row in rows:
        if row["model"] == "student (1 vector/video)":
            assert row["ratio_one"] is None
            continue
        assert "extrapolated" in row["how"] if row["n_videos"] > 1000 else "measured" in row["how"]
        if row["storage"] != "float32":
            continue  # numpy's float16→float32 conversion makes tiny float16 timings noisy
        if row["model"] == "xclip head":
            # X-CLIP's O(L·F·D) head: hundreds of dot products' worth per pair (margins leave
            # room for a shared, noisy CPU).
            assert row["ratio_one"] > 2 and row["ratio_batch"] > 20, row
        elif row["n_videos"] == 3000:
            # O(F·D) heads: still several times the student's cost per query in a batch.
            assert row["ratio_batch"] > 1, row


def test_torch_search_matches_the_serving_top_k() -> None:
    gen = torch.Generator().manual_seed(0)
    index = retrieval.random_unit(700, 16, gen)
    queries = retrieval.random_unit(5, 16, gen)
    scores, ids = retrieval.torch_top_k(index, queries, k=7, chunk_rows=128)
    want_scores, want_ids = top_k(index.numpy(), queries.numpy(), 7, chunk_rows=100)
    np.testing.assert_array_equal(ids.numpy(), want_ids)
    np.testing.assert_allclose(scores.numpy(), want_scores, rtol=1e-6)
