"""What checksums cost a training step: ``sim`` chunk shapes × fletcher32 at MSR-VTT width.

Why: with a filter (the per-chunk checksum) HDF5 must read and check a *whole* chunk to return
any part of it, while a training batch reads ~120 random caption rows of the cache. The version 1
layout (~1 MiB chunks of 32 rows, no filter) let HDF5 read just the requested rows; the same
chunks with a checksum would read 32× the bytes. This writes real caches (the real writer, 9k
videos wide, a row subset) in three layouts and times the real reader's batch read of B random
rows × their B videos, warm (page cache) and cold (the file's pages evicted with
``posix_fadvise(DONTNEED)`` before every batch, which touches no other file):

* ``v1``: 1 MiB target chunks (32 rows), no checksum (the old layout);
* ``v1+fletcher32``: the same chunks with the checksum (what adding the filter alone would do);
* ``v2``: 16 KiB target chunks (1 row at 9k videos) with the checksum (the current layout).

Usage: ``python bench/cache_chunks.py [--rows 16384] [--videos 9000] [--batch 120]
[--repeat 30]``; about a minute and ~1 GB of temporary disk at the defaults.
"""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path

import click
import numpy as np

import pipeline.cache.writer as writer_module
from pipeline.cache.reader import TeacherCache
from pipeline.cache.schema import CacheMeta
from pipeline.cache.writer import TeacherCacheWriter

LAYOUTS = {"v1": (1 << 20, False), "v1+fletcher32": (1 << 20, True), "v2": (16 << 10, True)}


def write_cache(path: Path, rows: int, videos: int, chunk_bytes: int, checksum: bool) -> float:
    """A finished cache of random scores; returns the seconds the writer took."""
    rng = np.random.default_rng(0)
    meta = CacheMeta(teacher_kind="xclip", checkpoint_sha256="0" * 64, frames_digest="bench",
                     manifest_digest="bench", max_words=32, max_frames=12, logit_scale=100.0)
    saved = writer_module.CHECKSUM
    writer_module.CHECKSUM = {"fletcher32": True} if checksum else {}
    started = time.perf_counter()
    try:
        writer = TeacherCacheWriter(path, caption_ids=[f"c{i}" for i in range(rows)],
                                    video_ids=[f"v{i}" for i in range(videos)],
                                    caption_video=rng.integers(0, videos, rows), meta=meta,
                                    block_rows=1024, chunk_bytes=chunk_bytes)
        with writer:
            for block in writer.pending_blocks():
                s, e = writer.block_range(block)
                sim = rng.standard_normal((e - s, videos), dtype=np.float32) * 10
                writer.write_block(block, sim, np.zeros((e - s, 12), np.float32),
                                   np.ones((e - s, 12), bool))
            writer.finalize()
    finally:
        writer_module.CHECKSUM = saved
    return time.perf_counter() - started


def evict(path: Path) -> None:
    """Drop this file's pages from the page cache (the next read goes to the disk)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)


def time_batches(cache: TeacherCache, batch: int, repeat: int, cold: bool) -> float:
    """Mean ms of ``cache.batch`` for B random rows × their own videos."""
    rng = np.random.default_rng(1)
    cache.batch(np.arange(batch), cache.caption_video[:batch])  # opens the handle
    total = 0.0
    for _ in range(repeat):
        rows = rng.choice(cache.n_captions, batch, replace=False)
        if cold:
            evict(cache.path)
        started = time.perf_counter()
        cache.batch(rows, cache.caption_video[rows])
        total += time.perf_counter() - started
    return total / repeat * 1e3


@click.command()
@click.option("--rows", type=int, default=16384, show_default=True,
              help="Caption rows written (MSR-VTT has 180k; the read cost per batch does not "
                   "depend on it once rows ≫ batch).")
@click.option("--videos", type=int, default=9000, show_default=True)
@click.option("--batch", type=int, default=120, show_default=True)
@click.option("--repeat", type=int, default=30, show_default=True)
def main(rows: int, videos: int, batch: int, repeat: int) -> None:
    """Print one line per layout: chunk shape, bytes read per batch, write s, warm/cold ms."""
    click.echo(f"{rows} rows x {videos} videos float16, batch {batch} random rows, "
               f"{repeat} batches")
    click.echo(f"{'layout':<15} {'chunk':>11} {'MiB/batch':>10} {'file MiB':>9} {'write s':>8} "
               f"{'warm ms':>8} {'cold ms':>8}")
    with tempfile.TemporaryDirectory(dir=os.environ.get("BENCH_TMP")) as tmp:
        for name, (chunk_bytes, checksum) in LAYOUTS.items():
            path = Path(tmp) / f"{name}.h5"
            write_s = write_cache(path, rows, videos, chunk_bytes, checksum)
            cache = TeacherCache(path)
            with __import__("h5py").File(path, "r") as handle:
                chunk = handle["sim"].chunks
            # With a filter HDF5 reads whole chunks; without, just the requested rows.
            per_row = chunk[0] * chunk[1] * 2 if checksum else videos * 2
            warm = time_batches(cache, batch, repeat, cold=False)
            cold = time_batches(cache, batch, repeat, cold=True)
            click.echo(f"{name:<15} {str(chunk):>11} {batch * per_row / 2**20:>10.2f} "
                       f"{path.stat().st_size / 2**20:>9.1f} {write_s:>8.1f} {warm:>8.2f} "
                       f"{cold:>8.2f}")
            cache.close()
            path.unlink()


if __name__ == "__main__":
    main()
