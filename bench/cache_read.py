"""Benchmark the student's per-step soft-label read from a teacher cache of real dimensions.

What a lab pays: MSR-VTT-9k's train cache is 180,000 captions × 9,000 videos of float16 logits
(3.0 GiB), VATEX's ~260k × 26k (12.6 GiB, ``--vatex``); every training step reads the B × B
block of its batch (B = 120) plus B × F relevance, for 10 epochs. The cache is written through
the project's own writer (random values) and read through the real training path
(:class:`pipeline.train.data_loading.GlobalBatchDataset` with its teacher, frames stubbed out),
in the shuffled order of epoch 0, in the training process (workers 0) and from 1 and 8
DataLoader workers, with a warm page cache (the file read once first) and a cold one
(``posix_fadvise(DONTNEED)`` on the file; the "resident" column, from ``mincore``, shows what
was cached before the run). Readers: ``h5py`` (the baseline: one ``read_direct`` per row),
``direct`` (:mod:`pipeline.cache.rows`, the default now) and ``ram`` (``load_all``: the matrix in
memory, warm only). The budget is the step time of the 1,000 clips/s goal: 120 ms at B = 120;
the read should stay under 5 % of it. "read" is the time of one batch's soft labels inside the
process that reads it; "delivered" is wall time per batch as the training loop receives them.

Usage: ``python bench/cache_read.py [--vatex | --quick] [--steps 200] [--workers 0,1,8]
[--readers h5py,direct,ram] [--cache PATH] [--keep] [--tmp-dir DIR]``. ``--quick``: 24,000 × 1,200
(55 MiB), under a minute. ``--cache`` reuses a file an earlier run kept (``--keep``).
"""

from __future__ import annotations

import argparse
import ctypes
import mmap
import os
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import (  # noqa: E402
    Column,
    PeakMemory,
    format_table,
    human_bytes,
    machine_line,
    write_teacher_cache,
)
from pipeline.cache.reader import TeacherCache  # noqa: E402
from pipeline.train.data_loading import (  # noqa: E402
    GlobalBatchDataset,
    TeacherSource,
    TrainingItems,
    epoch_loader,
)

#: (videos, captions per video, frames): MSR-VTT-9k train, VATEX train, the quick size.
SIZES = {"msrvtt9k": (9000, 20, 12), "vatex": (25991, 10, 12), "quick": (1200, 20, 12)}
BUDGET_S = 0.120  # one step at 1,000 clips/s with batch 120
WARMUP = 3

COLUMNS = [
    Column("reader", "reader", align="<"),
    Column("workers", "workers"),
    Column("cache", "page cache", align="<"),
    Column("resident", "resident", "{:.0%}"),
    Column("read_ms", "read ms (median)", "{:.2f}"),
    Column("p90_ms", "p90", "{:.2f}"),
    Column("delivered_ms", "delivered ms/step", "{:.2f}"),
    Column("budget", "of 120 ms", "{:.1%}"),
    Column("rss_main", "peak RSS main", align=">"),
    Column("rss_worker", "peak RSS worker", align=">"),
    Column("vs_h5py", "vs h5py", "{:.1f}x"),
]


# ------------------------------------------------------------------------------ page cache
def resident_fraction(path: Path) -> float | None:
    """Fraction of the file's pages in the page cache (Linux ``mincore``), or None."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.mmap.restype = ctypes.c_void_p
        libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int,
                              ctypes.c_int, ctypes.c_long]
        libc.mincore.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_void_p]
        libc.munmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
    except (OSError, AttributeError):
        return None
    size = path.stat().st_size
    pages = -(-size // mmap.PAGESIZE)
    with open(path, "rb") as handle:
        addr = libc.mmap(None, size, mmap.PROT_READ, mmap.MAP_SHARED, handle.fileno(), 0)
        if addr in (None, ctypes.c_void_p(-1).value):
            return None
        try:
            vec = (ctypes.c_ubyte * pages)()
            if libc.mincore(ctypes.c_void_p(addr), size, vec) != 0:
                return None
            return float(np.frombuffer(vec, np.uint8).__and__(1).mean())
        finally:
            libc.munmap(ctypes.c_void_p(addr), size)


def drop_page_cache(path: Path) -> bool:
    """Evict the file from the page cache (clean pages; no root needed). False if unsupported."""
    if not hasattr(os, "posix_fadvise"):
        return False
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)
    return True


def warm_page_cache(path: Path) -> None:
    """Read the whole file once so its pages are cached."""
    with open(path, "rb", buffering=0) as handle:
        while handle.read(64 << 20):
            pass


# ------------------------------------------------------------------------------ the read path
def _vm_hwm() -> int:
    with open("/proc/self/status", encoding="ascii") as handle:
        for line in handle:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    return 0


class _NoFrames:
    """Frames stand-in: the benchmark times the soft labels only."""

    def __init__(self, max_frames: int) -> None:
        self.max_frames = max_frames

    def read(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        n = len(rows)
        return (np.zeros((n, self.max_frames, 1, 1, 3), np.uint8),
                np.ones((n, self.max_frames), bool))


class TimedBatches(GlobalBatchDataset):
    """The training dataset, timing each item and reporting the reading process's peak RSS."""

    _reset_pid: int | None = None

    def __getitem__(self, index: int) -> dict[str, Any]:
        if self._reset_pid != os.getpid():  # a new worker: its peak starts now
            self._reset_pid = os.getpid()
            try:
                with open("/proc/self/clear_refs", "w", encoding="ascii") as handle:
                    handle.write("5")
            except OSError:
                pass
        started = time.perf_counter()
        batch = super().__getitem__(index)
        batch["read_s"] = time.perf_counter() - started
        batch["hwm"] = _vm_hwm()
        return batch


def make_dataset(cache: TeacherCache, batch: int, seed: int = 0) -> TimedBatches:
    """Every caption once per epoch, in batches of ``batch`` (the student's plan)."""
    n = cache.n_captions
    items = TrainingItems(token_ids=np.zeros((n, 1), np.int64),
                          token_mask=np.ones((n, 1), np.int64),
                          frame_rows=cache.caption_video.copy(),
                          teachers=[TeacherSource(cache, np.arange(n), cache.caption_video)])
    return TimedBatches(items, _NoFrames(cache.F), batch, seed)


def run_reads(dataset: TimedBatches, steps: int, workers: int) -> dict[str, Any]:
    """Read ``WARMUP + steps`` batches; per-batch read times, delivered time, peak RSS."""
    steps = min(steps, len(dataset) - WARMUP)
    peak = PeakMemory(torch.device("cpu"))
    peak.reset()
    reads, hwm = [], 0
    if workers == 0:
        batches = (dataset[i] for i in range(WARMUP + steps))
    else:
        dataset.plan = dataset.plan[:WARMUP + steps]
        batches = epoch_loader(dataset, 0, workers)
        dataset.set_epoch = lambda epoch: None  # type: ignore[method-assign]
    started = None
    for i, batch in enumerate(batches):
        if i == WARMUP - 1:
            started = time.perf_counter()
        if i >= WARMUP:
            reads.append(batch["read_s"])
            hwm = max(hwm, int(batch["hwm"]))
    delivered = (time.perf_counter() - started) / steps if started is not None else float("nan")
    main_peak = peak.peak()
    peak.close()
    times = np.asarray(reads)
    return {"read_ms": float(np.median(times) * 1e3), "p90_ms": float(np.quantile(times, .9) * 1e3),
            "delivered_ms": delivered * 1e3, "budget": float(np.median(times)) / BUDGET_S,
            "rss_main": human_bytes(main_peak),
            "rss_worker": human_bytes(hwm) if workers else "-"}


# ------------------------------------------------------------------------------ main
def write_cache(path: Path, size: tuple[int, int, int]) -> None:
    """The cache at real dimensions through the project's writer (random logits)."""
    n_videos, per_video, frames = size
    n_captions = n_videos * per_video
    started = time.perf_counter()
    write_teacher_cache(path, [f"c{i:07d}" for i in range(n_captions)],
                        [f"v{i:06d}" for i in range(n_videos)],
                        np.arange(n_captions) // per_video, max_frames=frames, max_words=32,
                        frames_digest="bench")
    print(f"wrote {path} ({human_bytes(path.stat().st_size)}) in "
          f"{time.perf_counter() - started:.0f} s", file=sys.stderr)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    size = p.add_mutually_exclusive_group()
    size.add_argument("--vatex", action="store_true", help="VATEX size (~260k × 26k)")
    size.add_argument("--quick", action="store_true", help="24k × 1.2k, under a minute")
    p.add_argument("--batch", type=int, default=120)
    p.add_argument("--steps", type=int, default=None, help="measured batches per row "
                   "[200; quick: 40]")
    p.add_argument("--workers", default="0,1,8", help="DataLoader workers (0 = in process)")
    p.add_argument("--readers", default="h5py,direct,ram")
    p.add_argument("--caches", default="warm,cold", help="page cache states")
    p.add_argument("--cache", type=Path, default=None, help="reuse this cache file")
    p.add_argument("--keep", action="store_true", help="keep the written cache file")
    p.add_argument("--tmp-dir", default=None, help="where the cache is written (a disk, not "
                   "tmpfs, or 'cold' means nothing)")
    return p.parse_args(argv)


def measure(path: Path, args: argparse.Namespace) -> list[dict[str, Any]]:
    """Every (reader, workers, page cache) row against the h5py row of the same setting."""
    steps = args.steps or (40 if args.quick else 200)
    rows: list[dict[str, Any]] = []
    for reader in [r.strip() for r in args.readers.split(",") if r.strip()]:
        for workers in [int(w) for w in args.workers.split(",")]:
            for state in [c.strip() for c in args.caches.split(",") if c.strip()]:
                if reader == "ram" and (workers or state == "cold"):
                    continue  # in RAM: neither the page cache nor workers matter
                if state == "cold" and not drop_page_cache(path):
                    continue
                if state == "warm":
                    warm_page_cache(path)
                row = {"reader": reader, "workers": workers, "cache": state,
                       "resident": resident_fraction(path)}
                cache = TeacherCache(path, load_all=reader == "ram", direct=reader == "direct")
                row.update(run_reads(make_dataset(cache, args.batch), steps, workers))
                cache.close()
                rows.append(row)
                print(f"  {reader} workers={workers} {state}: {row['read_ms']:.2f} ms",
                      file=sys.stderr)
    for row in rows:
        base = next((r for r in rows if r["reader"] == "h5py" and r["cache"] == row["cache"]
                     and r["workers"] == row["workers"]), None)
        if base is None and row["reader"] == "ram":
            base = next((r for r in rows if r["reader"] == "h5py" and r["workers"] == 0
                         and r["cache"] == "warm"), None)
        row["vs_h5py"] = base["read_ms"] / row["read_ms"] if base else None
    return rows


def main(argv: Sequence[str] | None = None) -> list[dict[str, Any]]:
    """Write (or reuse) the cache, measure every row, print the table; return the rows."""
    args = parse_args(argv)
    size = SIZES["vatex" if args.vatex else "quick" if args.quick else "msrvtt9k"]
    with tempfile.TemporaryDirectory(prefix="teachclip-cache-read-", dir=args.tmp_dir) as tmp:
        path = args.cache or Path(tmp) / "cache.h5"
        if not path.is_file():
            write_cache(path, size)
        cache = TeacherCache(path)
        shape, n_bytes = cache.shape, path.stat().st_size
        cache.close()
        rows = measure(path, args)
        if args.keep and args.cache is None:
            kept = Path(args.tmp_dir or tempfile.gettempdir()) / "teachclip-cache-read.h5"
            os.replace(path, kept)
            print(f"kept {kept}", file=sys.stderr)
    print(f"soft-label read per step, batch {args.batch}, cache {shape[0]:,} × {shape[1]:,} "
          f"float16 ({human_bytes(n_bytes)}), shuffled epoch order; "
          f"{machine_line(torch.device('cpu'))}")
    print(format_table(rows, COLUMNS))
    return rows


if __name__ == "__main__":
    main()
