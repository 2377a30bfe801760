"""Benchmark the frames-stage decode path against "decode every frame into Python, then sample".

The baseline is what the official OpenCV loader effectively does: every frame is decoded at full
resolution into Python, the 1 fps frames are picked, then resized and cropped. The stage path lets
ffmpeg drop frames (``framestep``) and resize/crop in its filter graph, so only F small frames
cross the pipe. Both run in the same process pool, in the same run, on the same files.

Usage: ``python bench/frames.py [--synth-videos 24] [--long-videos 4] [--long-seconds 30]
[--long-size 640x360] [--workers 2] [--size 224] [--max-frames 12]`` (default run < 2 min on
2 cores). Prints a table of videos/s and source frames/s, and the speed-up.
"""

from __future__ import annotations

import subprocess
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import replace
from pathlib import Path

import click
import numpy as np
import torch

from pipeline.data.sampling import official_frame_indices, sample_video
from pipeline.data.synth import render_dataset
from pipeline.data.synth_plan import SynthParams
from pipeline.data.video import decode_frames, ffmpeg_exe, ffmpeg_version, probe


def stage_path(path: str, size: int, max_frames: int) -> tuple[int, int]:
    """The frames stage's decode (official policy); returns (decoded frames, kept frames)."""
    sampled = sample_video(path, policy="official", max_frames=max_frames, size=size)
    return sampled.n_decoded, int(sampled.mask.sum())


def every_frame_path(path: str, size: int, max_frames: int) -> tuple[int, int]:
    """Baseline: all frames at full resolution into numpy, pick, then bicubic resize + crop."""
    info = probe(path)
    frames = decode_frames(path, width=info.width, height=info.height)
    picked = frames[official_frame_indices(len(frames), info.fps or 1, max_frames)]
    tensor = torch.from_numpy(np.ascontiguousarray(picked)).permute(0, 3, 1, 2).float()
    h, w = tensor.shape[-2:]
    scale = size / min(h, w)
    new_h, new_w = max(size, round(h * scale)), max(size, round(w * scale))
    tensor = torch.nn.functional.interpolate(tensor, size=(new_h, new_w), mode="bicubic",
                                             align_corners=False)
    top, left = (new_h - size) // 2, (new_w - size) // 2
    out = tensor[..., top:top + size, left:left + size].clamp(0, 255).round().to(torch.uint8)
    return len(frames), int(out.shape[0])


def make_long_clip(path: Path, seconds: float, size: str, fps: str) -> None:
    """A long test clip from ffmpeg's testsrc2 source (changes every frame)."""
    subprocess.run([ffmpeg_exe(), "-hide_banner", "-loglevel", "error", "-y", "-f", "lavfi",
                    "-i", f"testsrc2=s={size}:r={fps}:d={seconds}", "-pix_fmt", "yuv420p",
                    "-c:v", "libx264", "-preset", "ultrafast", "-threads", "2", str(path)],
                   check=True)


def timed(pool: ProcessPoolExecutor, fn: Callable[[str, int, int], tuple[int, int]],
          paths: list[str], size: int, max_frames: int) -> tuple[float, int]:
    started = time.perf_counter()
    results = list(pool.map(fn, paths, [size] * len(paths), [max_frames] * len(paths)))
    return time.perf_counter() - started, sum(r[0] for r in results)


# source frames/s uses the baseline's count (every frame of every video) for both paths, so the
# column compares how fast each path gets through the same footage.


@click.command()
@click.option("--synth-videos", type=int, default=48, show_default=True)
@click.option("--long-videos", type=int, default=6, show_default=True)
@click.option("--long-seconds", type=float, default=30.0, show_default=True)
@click.option("--long-size", default="640x360", show_default=True)
@click.option("--workers", type=int, default=2, show_default=True)
@click.option("--size", type=int, default=224, show_default=True)
@click.option("--max-frames", type=int, default=12, show_default=True)
def main(synth_videos: int, long_videos: int, long_seconds: float, long_size: str, workers: int,
         size: int, max_frames: int) -> None:
    """Print videos/s and frames/s of both decode paths on synthetic and long clips."""
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        sets: list[tuple[str, list[str]]] = []
        if synth_videos:
            params = replace(SynthParams(), n_train=synth_videos, n_val=0, n_test=0)
            manifest = render_dataset(tmp / "synth", params, workers=workers)
            sets.append((f"synth {params.resolution}px {params.fps}fps",
                         [str(p) for p in manifest.resolved_paths()]))
        if long_videos:
            rates = ["25", "30000/1001"]
            longs = []
            for i in range(long_videos):
                path = tmp / f"long{i}.mp4"
                make_long_clip(path, long_seconds, long_size, rates[i % 2])
                longs.append(str(path))
            sets.append((f"testsrc2 {long_size} {long_seconds:g}s 25/29.97fps", longs))
        header = (f"{'set':<34} {'path':<22} {'videos':>6} {'sec':>7} {'videos/s':>9} "
                  f"{'src frames/s':>13} {'speed-up':>8}")
        click.echo(f"ffmpeg {ffmpeg_version()} workers={workers} size={size} F={max_frames}")
        click.echo(header)
        click.echo("-" * len(header))
        with ProcessPoolExecutor(max_workers=workers) as pool:
            pool.submit(int, 0).result()  # start workers before timing
            for name, paths in sets:
                base_s, frames = timed(pool, every_frame_path, paths, size, max_frames)
                fast_s, _ = timed(pool, stage_path, paths, size, max_frames)
                for label, secs, ratio in (("every frame (baseline)", base_s, ""),
                                           ("frames stage", fast_s, f"{base_s / fast_s:.1f}x")):
                    click.echo(f"{name:<34} {label:<22} {len(paths):>6} {secs:>7.2f} "
                               f"{len(paths) / secs:>9.1f} {frames / secs:>13.0f} {ratio:>8}")


if __name__ == "__main__":
    main()
