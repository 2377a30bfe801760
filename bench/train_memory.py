"""Peak memory of ``student train``'s data path at MSR-VTT size, with ``in_memory`` off and on.

What ``--in-memory`` changes is the data path: the teacher caches' ``sim`` matrices
(``TeacherCache.load_all``) and every frame (``FramesReader.load_all``) are read into RAM before
training instead of being read per batch. This runs exactly what ``teachclip student train``
runs for it (:func:`pipeline.train.student_run.open_caches` with the compatibility checks, the
frames' ``load_all``, :func:`pipeline.train.data_loading.build_training_items` with the real
tokenizer, :class:`~pipeline.train.data_loading.GlobalBatchDataset` through ``epoch_loader``) on
MSR-VTT-9k's train split: 9,000 videos × 20 captions, a real-size 180,000 × 9,000 teacher cache
and a frames.h5 of 12 frames per video, each configuration in a fresh process. The model is not
built: its memory does not depend on ``in_memory`` (ViT-B/32 student with seqTransf + AdamW
state: ~164M parameters × 16 bytes ≈ 2.4 GiB, computed).

Frames are ``--frame-sizes`` px (default 32 and 64) because 224 px frames of 9,000 videos are
16.3 GB (uncompressed in RAM). The table's last rows extrapolate to 224 px, linearly in frame
pixels through the two measured sizes (the frames in RAM and the per-batch frame buffers grow
with the pixels, the rest does not).

Columns: peak RSS of the training process after setup and after ``--steps`` batches (``VmHWM``),
the largest worker's peak RSS, and the peak of the summed PSS of the training process and its
workers (forked workers share the in-memory arrays; PSS counts shared pages once).

Usage: ``python bench/train_memory.py [--quick] [--workers 0,2] [--steps 30] [--frame-sizes 32,64]
[--cache PATH] [--tmp-dir DIR]`` (``--cache``: a cache kept by ``bench/cache_read.py --keep``).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import Column, format_table, human_bytes, write_frames  # noqa: E402
from bench.common import write_teacher_cache as _write_cache  # noqa: E402

VIDEOS, PER_VIDEO, FRAMES, WORDS = 9000, 20, 12, 32
COLUMNS = [
    Column("in_memory", "in_memory", align="<"),
    Column("frame_px", "frames px"),
    Column("workers", "workers"),
    Column("frames_bytes", "frames.h5 data", align=">"),
    Column("setup", "peak RSS after setup", align=">"),
    Column("train", "peak RSS training", align=">"),
    Column("worker", "peak RSS worker", align=">"),
    Column("pss", "peak PSS all", align=">"),
    Column("note", "note", align="<"),
]


# ------------------------------------------------------------------------------ inputs
def write_inputs(root: Path, videos: int, frame_px: int, cache: Path | None) -> tuple[Path, Path]:
    """Manifest + frames.h5 (+ the cache, unless reused) with matching ids and digests."""
    ids = [f"v{i:06d}" for i in range(videos)]
    caption_ids = [f"c{i:07d}" for i in range(videos * PER_VIDEO)]
    pd.DataFrame({"video_id": ids, "path": [f"{v}.mp4" for v in ids], "split": "train"}
                 ).to_csv(root / "videos.csv", index=False)
    pd.DataFrame({"caption_id": caption_ids, "video_id": np.repeat(ids, PER_VIDEO),
                  "split": "train",
                  "text": [f"a person shows thing number {i} to the camera" for i in
                           range(len(caption_ids))]}).to_csv(root / "captions.csv", index=False)
    from pipeline.data.manifest import Manifest

    manifest = Manifest.load(root)
    frames = write_frames(root / f"frames{frame_px}.h5", videos, FRAMES, frame_px,
                          compression="lzf")
    if cache is None:
        cache = root / "cache.h5"
        if not cache.is_file():
            _write_cache(cache, caption_ids, ids, np.arange(len(caption_ids)) // PER_VIDEO,
                         max_frames=FRAMES, max_words=WORDS, frames_digest="bench")
    with h5py.File(cache, "r+") as handle:  # the digests student train checks
        handle.attrs["frames_digest"] = frames.digest
        handle.attrs["manifest_digest"] = manifest.digest()
    return frames.path, cache


# ------------------------------------------------------------------------------ child
def _status(field: str, pid: str = "self") -> int:
    with open(f"/proc/{pid}/status", encoding="ascii") as handle:
        for line in handle:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    return 0


class _PssSampler(threading.Thread):
    """Peak of this process's + its children's PSS and the largest child peak RSS (0.1 s)."""

    def __init__(self) -> None:
        super().__init__(daemon=True)
        self.stop, self.pss, self.child_rss = threading.Event(), 0, 0

    def run(self) -> None:
        import psutil

        me = psutil.Process()
        while not self.stop.is_set():
            total = 0
            for proc in [me, *me.children(recursive=True)]:
                try:
                    total += proc.memory_full_info().pss
                    if proc.pid != me.pid:
                        self.child_rss = max(self.child_rss, _status("VmHWM", str(proc.pid)))
                except (psutil.Error, OSError):
                    continue
            self.pss = max(self.pss, total)
            self.stop.wait(0.1)


def child(root: Path, frames_path: Path, cache: Path, in_memory: bool, workers: int,
          steps: int, batch: int) -> dict[str, Any]:
    """One configuration, as ``student train`` sets it up; memory figures in bytes."""
    from pipeline.data.frames_store import FramesReader
    from pipeline.data.manifest import Manifest
    from pipeline.models.tokenizer import ClipTokenizer
    from pipeline.train.data_loading import (
        GlobalBatchDataset,
        build_training_items,
        epoch_loader,
    )
    from pipeline.train.student_run import open_caches

    sampler = _PssSampler()
    sampler.start()
    manifest = Manifest.load(root)
    frames = FramesReader(frames_path)
    caches = open_caches([cache], manifest=manifest, frames=frames, max_words=WORDS,
                         in_memory=in_memory)
    if in_memory:
        frames.load_all()
    items, _ = build_training_items(manifest, frames, ClipTokenizer.default(), WORDS, caches)
    setup = _status("VmHWM")
    dataset = GlobalBatchDataset(items, frames, batch, seed=0)
    dataset.plan = dataset.plan[:steps]
    started = time.perf_counter()
    for _ in epoch_loader(dataset, 0, workers):
        pass
    seconds = time.perf_counter() - started
    sampler.stop.set()
    sampler.join()
    return {"setup": setup, "train": _status("VmHWM"), "worker": sampler.child_rss,
            "pss": sampler.pss, "ms_per_batch": seconds / steps * 1e3}


# ------------------------------------------------------------------------------ main
def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--quick", action="store_true", help="900 videos, 32 px (seconds)")
    p.add_argument("--workers", default="0,2")
    p.add_argument("--steps", type=int, default=30)
    p.add_argument("--batch", type=int, default=120)
    p.add_argument("--frame-sizes", default="32,64")
    p.add_argument("--cache", type=Path, default=None)
    p.add_argument("--tmp-dir", default=None)
    p.add_argument("--child", default=None, help=argparse.SUPPRESS)
    return p.parse_args(argv)


def run_child(spec: dict[str, Any]) -> dict[str, Any]:
    """A fresh interpreter per configuration: each starts with a clean peak."""
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
    proc = subprocess.run([sys.executable, __file__, "--child", json.dumps(spec)], env=env,
                          capture_output=True, text=True)
    if proc.returncode != 0:
        return {"note": f"failed: {proc.stderr.strip().splitlines()[-1:]}"}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def extrapolated(rows: list[dict[str, Any]], videos: int, px: int) -> list[dict[str, Any]]:
    """224 px rows, linear in frame pixels through the two largest measured sizes of each
    (in_memory, workers) setting: frames in RAM and the per-batch frame buffers (the batch being
    read, the workers' prefetched batches) both grow with the pixels. With one measured size,
    only the frames in RAM are added (a lower bound for the per-batch buffers)."""
    out = []
    for in_memory in ("off", "on"):
        for workers in sorted({r["workers"] for r in rows}):
            series = sorted((r for r in rows if r["in_memory"] == in_memory
                             and r["workers"] == workers and "setup" in r),
                            key=lambda r: r["frame_px"])
            if not series:
                continue
            top = series[-1]
            new = {**top, "frame_px": px, "frames_bytes": videos * FRAMES * 3 * px * px}
            if len(series) > 1:
                low = series[-2]
                scale = (px * px - top["frame_px"] ** 2) / (top["frame_px"] ** 2
                                                           - low["frame_px"] ** 2)
                for key in ("setup", "train", "worker", "pss"):
                    new[key] = top[key] + scale * (top[key] - low[key])
                new["note"] = (f"extrapolated (linear in pixels, {low['frame_px']} and "
                               f"{top['frame_px']} px)")
            else:
                grow = (new["frames_bytes"] - top["frames_bytes"]) if in_memory == "on" else 0
                for key in ("setup", "train", "pss"):
                    new[key] = top[key] + grow
                new["worker"] = top["worker"] + (grow if workers else 0)
                new["note"] = f"extrapolated from {top['frame_px']} px (+frames in RAM only)"
            out.append(new)
    return out


def main(argv: Sequence[str] | None = None) -> list[dict[str, Any]]:
    args = parse_args(argv)
    if args.child:
        spec = json.loads(args.child)
        print(json.dumps(child(Path(spec["root"]), Path(spec["frames"]), Path(spec["cache"]),
                               spec["in_memory"], spec["workers"], spec["steps"],
                               spec["batch"])))
        return []
    videos = 900 if args.quick else VIDEOS
    sizes = [32] if args.quick else [int(s) for s in args.frame_sizes.split(",")]
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="teachclip-train-memory-", dir=args.tmp_dir) as tmp:
        root = Path(tmp)
        for px in sizes:
            frames_path, cache = write_inputs(root, videos, px, args.cache)
            for in_memory in (False, True):
                for workers in [int(w) for w in args.workers.split(",")]:
                    spec = {"root": str(root), "frames": str(frames_path), "cache": str(cache),
                            "in_memory": in_memory, "workers": workers,
                            "steps": args.steps, "batch": args.batch}
                    row = {"in_memory": "on" if in_memory else "off", "frame_px": px,
                           "workers": workers, "frames_bytes": videos * FRAMES * 3 * px * px,
                           "note": "", **run_child(spec)}
                    rows.append(row)
                    print(f"  {px}px in_memory={in_memory} workers={workers} done",
                          file=sys.stderr)
            frames_path.unlink()
        cache_bytes = cache.stat().st_size
    rows += extrapolated(rows, videos, 224)
    shown = [{**r, **{k: human_bytes(r[k]) for k in ("frames_bytes", "setup", "train",
                                                       "worker", "pss") if k in r}}
             for r in rows]
    for row in shown:
        if row.get("workers") == 0:
            row["worker"] = "-"
    print(f"student train data path, {videos:,} videos × {PER_VIDEO} captions, batch "
          f"{args.batch}, {args.steps} batches, teacher cache {human_bytes(cache_bytes)}")
    print(format_table(shown, COLUMNS))
    return rows


if __name__ == "__main__":
    main()
