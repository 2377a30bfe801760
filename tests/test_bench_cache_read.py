"""bench/cache_read.py --quick: every reader/worker/page-cache row and the table's columns."""

from __future__ import annotations

import contextlib
import io
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench import cache_read  # noqa: E402


def test_quick_run_prints_the_table(tmp_path: Path) -> None:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        rows = cache_read.main(["--quick", "--steps", "4", "--workers", "0,1",
                                "--tmp-dir", str(tmp_path)])
    printed = out.getvalue()
    for header in ("reader", "workers", "page cache", "resident", "read ms (median)", "p90",
                   "delivered ms/step", "of 120 ms", "peak RSS main", "peak RSS worker",
                   "vs h5py"):
        assert f" {header} |" in printed, header
    assert "24,000 × 1,200 float16" in printed
    kinds = {(r["reader"], r["workers"], r["cache"]) for r in rows}
    assert ("h5py", 0, "warm") in kinds and ("direct", 1, "cold") in kinds
    assert ("ram", 0, "warm") in kinds and ("ram", 1, "warm") not in kinds
    for row in rows:
        assert row["read_ms"] > 0 and row["delivered_ms"] > 0 and row["vs_h5py"] > 0
    assert not list(tmp_path.iterdir()), "temporary cache left behind"
