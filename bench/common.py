"""Helpers shared by the benchmarks: tables, timing, peak memory and synthetic artifacts.

Why real file formats for synthetic data: the benchmarks must time the code paths a real run
takes (``FramesReader`` HDF5 reads, ``TeacherCache.batch``), so the random frames and teacher
scores are written with the project's own writers, not handed over as in-memory tensors.
"""

from __future__ import annotations

import datetime
import os
import platform
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

# ------------------------------------------------------------------------------ tables


@dataclass(frozen=True)
class Column:
    """One table column: the row key, its header and how a value is printed."""

    key: str
    header: str
    fmt: str = "{}"
    align: str = ">"


def format_value(value: Any, fmt: str) -> str:
    if value is None or (isinstance(value, float) and not np.isfinite(value)):
        return "-"
    return fmt.format(value)


def format_table(rows: Sequence[dict[str, Any]], columns: Sequence[Column]) -> str:
    """A plain-text table (markdown pipes, so it pastes into reports as is)."""
    cells = [[c.header for c in columns]]
    for row in rows:
        cells.append([format_value(row.get(c.key), c.fmt) for c in columns])
    widths = [max(len(r[i]) for r in cells) for i in range(len(columns))]

    def line(values: list[str]) -> str:
        parts = [f"{v:{c.align}{w}}" for v, c, w in zip(values, columns, widths, strict=True)]
        return "| " + " | ".join(parts) + " |"

    rule = "|" + "|".join("-" * (w + 2) for w in widths) + "|"
    return "\n".join([line(cells[0]), rule] + [line(r) for r in cells[1:]])


def human_bytes(n: float) -> str:
    """1536 -> '1.5 KiB' (binary units, as memory is reported)."""
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    raise AssertionError("unreachable")


def machine_line(device: torch.device) -> str:
    """One line naming the machine, the date and the library versions (goes above a table)."""
    if device.type == "cuda":
        what = f"{torch.cuda.get_device_name(device)} + {os.cpu_count()} CPU cores"
    else:
        what = (f"{os.cpu_count()}-core CPU ({platform.machine()}), "
                f"{torch.get_num_threads()} torch threads")
    import transformers  # only for the version string

    return (f"{what}; torch {torch.__version__}, transformers {transformers.__version__}; "
            f"{datetime.date.today().isoformat()}")


# ------------------------------------------------------------------------------ timing


def synchronize(device: torch.device) -> None:
    """Wait for queued device work (timing boundaries only: never inside a measured step)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn: Callable[[], Any], device: torch.device, repeats: int = 1) -> float:
    """Median wall seconds of ``repeats`` calls of ``fn`` (device work included)."""
    times = []
    for _ in range(max(1, repeats)):
        synchronize(device)
        start = time.perf_counter()
        fn()
        synchronize(device)
        times.append(time.perf_counter() - start)
    return float(np.median(times))


# ------------------------------------------------------------------------------ memory


def _vm_hwm_bytes() -> int | None:
    """Peak resident set size of this process (Linux ``VmHWM``), or None elsewhere."""
    try:
        with open("/proc/self/status", encoding="ascii") as handle:
            for line in handle:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def _rss_bytes() -> int:
    try:
        with open("/proc/self/statm", encoding="ascii") as handle:
            return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError):
        import resource

        return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024


class PeakMemory:
    """Peak memory since :meth:`reset`: CUDA max allocated on a GPU, process RSS peak on the CPU.

    On Linux the RSS high-water mark is reset by writing 5 to ``/proc/self/clear_refs``; where
    that is refused a 5 ms sampling thread stands in. DataLoader workers are other processes:
    their memory is not included (they hold a few prefetched batches each).
    """

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._sampled = 0

    def reset(self) -> None:
        """Start a new measurement (synchronises the device first)."""
        self.close()
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            return
        try:
            with open("/proc/self/clear_refs", "w", encoding="ascii") as handle:
                handle.write("5")
        except OSError:
            self._sampled = _rss_bytes()
            self._stop.clear()
            self._thread = threading.Thread(target=self._sample, daemon=True)
            self._thread.start()

    def _sample(self) -> None:
        while not self._stop.is_set():
            self._sampled = max(self._sampled, _rss_bytes())
            self._stop.wait(0.005)

    def peak(self) -> int:
        """Peak bytes since the last reset (synchronises the device)."""
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            return int(torch.cuda.max_memory_allocated(self.device))
        if self._thread is not None:
            return max(self._sampled, _rss_bytes())
        return _vm_hwm_bytes() or _rss_bytes()

    def close(self) -> None:
        """Stop the sampling thread, if any."""
        if self._thread is not None:
            self._stop.set()
            self._thread.join()
            self._thread = None


# ------------------------------------------------------------------------------ artifacts


def write_frames(path: Path, n_videos: int, max_frames: int, size: int, *, seed: int = 0,
                 compression: str = "none", short_every: int = 0) -> Any:
    """A finished ``frames.h5`` of random frames (real writer, real layout); returns a reader.

    Content does not matter for speed, so a few random videos are reused round-robin (random
    bytes are what costs time to make). ``short_every=k`` gives every k-th video half its frames
    (padding exercised). Returns a :class:`pipeline.data.frames_store.FramesReader`.
    """
    from pipeline.data.frames_store import FramesReader, FramesWriter

    rng = np.random.default_rng(seed)
    pool = rng.integers(0, 256, (min(8, n_videos), max_frames, size, size, 3), dtype=np.uint8)
    tmp = path.with_name(path.name + ".tmp")
    attrs = {"sampling_policy": "bench-random", "max_frames": max_frames, "resolution": size}
    writer = FramesWriter.open(tmp, [f"v{i:06d}" for i in range(n_videos)],
                               max_frames=max_frames, size=size, attrs=attrs,
                               compression=compression)
    with writer:
        for row in range(n_videos):
            frames = pool[row % len(pool)]
            mask = np.ones(max_frames, dtype=bool)
            if short_every and row % short_every == short_every - 1:
                mask[max_frames // 2:] = False
                frames = frames.copy()
                frames[max_frames // 2:] = 0
            writer.write(row, frames, mask, int(mask.sum()))
        writer.finalize(attrs)
    os.replace(tmp, path)
    return FramesReader(path)


def write_teacher_cache(path: Path, caption_ids: Sequence[str], video_ids: Sequence[str],
                        caption_video: Sequence[int], *, max_frames: int, max_words: int,
                        frames_digest: str, seed: int = 0) -> Any:
    """A finished teacher cache of random logits/relevance (real writer); returns the reader."""
    from pipeline.cache.reader import TeacherCache
    from pipeline.cache.schema import CacheMeta
    from pipeline.cache.writer import TeacherCacheWriter

    rng = np.random.default_rng(seed)
    meta = CacheMeta(teacher_kind="xclip", checkpoint_sha256="0" * 64,
                     frames_digest=frames_digest, manifest_digest="bench",
                     max_words=max_words, max_frames=max_frames, logit_scale=100.0)
    writer = TeacherCacheWriter(path, caption_ids=list(caption_ids), video_ids=list(video_ids),
                                caption_video=list(caption_video), meta=meta)
    with writer:
        for block in writer.pending_blocks():
            start, stop = writer.block_range(block)
            n = stop - start
            sim = (rng.standard_normal((n, len(video_ids)), dtype=np.float32) * 10)
            rel = rng.standard_normal((n, max_frames), dtype=np.float32)
            writer.write_block(block, sim, rel, np.ones((n, max_frames), dtype=bool))
        writer.finalize()
    return TeacherCache(path)


@contextmanager
def threads(n: int | None) -> Iterator[None]:
    """Run a region with ``n`` intra-op threads (None: leave torch's setting)."""
    before = torch.get_num_threads()
    if n:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)
