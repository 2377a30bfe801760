"""Rendering the embedded default dataset: synthetic mp4 videos of moving coloured shapes.

What the videos show is planned in :mod:`pipeline.data.synth_plan`; this module draws the frames
(filler: grey clutter, noise textures, drifting stripes drawn from one distribution for every
video, never a target shape) and encodes them. Everything derives from one seed: the plan comes
from a master generator, each video's pixels from a per-video generator, and the encoder runs
single-threaded with bit-exact flags, so the same seed gives byte-identical files.

Library only: :func:`render_video_frames` (pure numpy), :func:`encode_frames` (ffmpeg),
:func:`render_dataset` (all of it, into a tmp dir published at the end).
"""

from __future__ import annotations

import functools
import json
import shutil
import subprocess
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import asdict
from pathlib import Path

import ffmpeg
import numpy as np
import pandas as pd

from pipeline.atomic import publish_dir
from pipeline.data.manifest import Manifest
from pipeline.data.synth_plan import (
    COLORS,
    DIRECTIONS,
    SIZES,
    Segment,
    SynthParams,
    SynthVideo,
    plan_dataset,
    segment_phrase,
)
from pipeline.data.video import ffmpeg_exe
from pipeline.errors import TeachclipError

SEGMENTS_FILE = "segments.csv"
PLAN_FILE = "synth_plan.json"
VIDEO_DIR = "videos"


def _shape_mask(shape: str, xx: np.ndarray, yy: np.ndarray, cx: float, cy: float,
                r: float) -> np.ndarray:
    dx, dy = xx - cx, yy - cy
    if shape == "circle":
        return dx * dx + dy * dy <= r * r
    if shape == "square":
        return np.maximum(np.abs(dx), np.abs(dy)) <= 0.85 * r
    if shape == "diamond":
        return np.abs(dx) + np.abs(dy) <= 1.15 * r
    if shape == "triangle":  # apex up, base at +0.8 r
        inside_y = (dy >= -r) & (dy <= 0.8 * r)
        return inside_y & (np.abs(dx) <= (dy + r) / 1.8)
    raise ValueError(f"unknown shape {shape!r}")


def _background(rng: np.random.Generator, res: int) -> np.ndarray:
    """A per-video, low-saturation gradient with a fixed fine texture ("varied backgrounds")."""
    grey = rng.uniform(70, 170)
    tint = rng.uniform(-20, 20, size=3)
    ramp = np.linspace(-1, 1, res)
    angle = rng.uniform(0, 2 * np.pi)
    grad = np.cos(angle) * ramp[None, :] + np.sin(angle) * ramp[:, None]
    base = grey + tint[None, None, :] + 18 * grad[:, :, None]
    base += rng.normal(0, 5, size=(res, res, 1))
    return base.astype(np.float32)


def _filler_frames(rng: np.random.Generator, background: np.ndarray, n: int,
                   difficulty: float) -> np.ndarray:
    """Uninformative frames: grey blobs / block noise / stripes; never a saturated target shape."""
    res = background.shape[0]
    out = np.repeat(background[None], n, axis=0)
    if n == 0 or difficulty <= 0:
        return out
    yy, xx = np.mgrid[0:res, 0:res].astype(np.float32) + 0.5
    t = np.arange(n, dtype=np.float32)[:, None, None]
    style = int(rng.integers(3))
    contrast = 90.0 * difficulty
    if style == 0:  # soft grey blobs drifting
        for _ in range(1 + int(round(5 * difficulty))):
            cx, cy = rng.uniform(0, res, size=2)
            vx, vy = rng.uniform(-1.5, 1.5, size=2)
            sigma = rng.uniform(0.06, 0.2) * res
            amp = rng.uniform(-1, 1) * contrast
            px = (cx + vx * t) % res
            py = (cy + vy * t) % res
            out += (amp * np.exp(-((xx - px) ** 2 + (yy - py) ** 2) / (2 * sigma**2)))[..., None]
    elif style == 1:  # blocky grey noise, changing every few frames
        block = int(rng.integers(2, 9))
        period = int(rng.integers(1, 5))
        cells = -(-res // block)
        for start in range(0, n, period):
            noise = rng.uniform(-1, 1, size=(cells, cells)) * contrast * 0.7
            tile = np.kron(noise, np.ones((block, block), dtype=np.float32))[:res, :res]
            out[start:start + period] += tile[None, :, :, None]
    else:  # moving grey stripes
        freq = rng.uniform(2, 6) * 2 * np.pi / res
        angle = rng.uniform(0, np.pi)
        speed = rng.uniform(0.1, 0.6)
        phase = np.cos(angle) * xx + np.sin(angle) * yy
        out += (0.6 * contrast * np.sin(freq * phase[None] + speed * t))[..., None]
    out += rng.normal(0, 6 * difficulty, size=out.shape[:3] + (1,)).astype(np.float32)
    return out


def render_video_frames(video: SynthVideo, params: SynthParams) -> np.ndarray:
    """All frames of one planned video, uint8 [n_frames, R, R, 3] (pure: seeded by the video)."""
    rng = np.random.default_rng([params.seed, 1, video.index])
    res = params.resolution
    background = _background(rng, res)
    frames = np.empty((video.n_frames, res, res, 3), dtype=np.float32)
    cursor = 0
    yy, xx = np.mgrid[0:res, 0:res].astype(np.float32) + 0.5
    for segment in (*video.segments, None):
        stop = video.n_frames if segment is None else segment.start_frame
        frames[cursor:stop] = _filler_frames(rng, background, stop - cursor,
                                             params.filler_difficulty)
        if segment is None:
            break
        length = segment.end_frame - segment.start_frame
        radius = SIZES[segment.size][0] * res * params.shape_scale
        (dx, dy), _ = DIRECTIONS[segment.direction]
        travel = 0.45 * res
        lo, hi = radius + travel / 2, res - radius - travel / 2
        along = rng.uniform(lo, hi)
        across = rng.uniform(radius, res - radius)
        cx0, cy0 = (along, across) if dx else (across, along)
        colour = np.array(COLORS[segment.color][0], dtype=np.float32)
        for i in range(length):
            frac = i / max(1, length - 1) - 0.5
            cx, cy = cx0 + dx * travel * frac, cy0 + dy * travel * frac
            frame = background.copy()
            frame[_shape_mask(segment.shape, xx, yy, cx, cy, radius)] = colour
            frames[segment.start_frame + i] = frame
        cursor = segment.end_frame
    return np.clip(np.rint(frames), 0, 255).astype(np.uint8)


# ----------------------------------------------------------------------------- encoding
@functools.lru_cache(maxsize=1)
def available_encoders() -> frozenset[str]:
    """Encoder names the ffmpeg binary was built with."""
    proc = subprocess.run([ffmpeg_exe(), "-hide_banner", "-encoders"], capture_output=True,
                          timeout=60)
    names = set()
    for line in proc.stdout.decode("utf-8", "replace").splitlines():
        parts = line.split()
        if len(parts) >= 2 and len(parts[0]) == 6 and parts[0][0] == "V":
            names.add(parts[1])
    return frozenset(names)


def resolve_codec(codec: str) -> str:
    """``auto`` → libx264 if present, else mpeg4 (both ship with common ffmpeg builds)."""
    if codec != "auto":
        return codec
    return "libx264" if "libx264" in available_encoders() else "mpeg4"


def encode_frames(frames: np.ndarray, path: str | Path, *, fps: int, codec: str = "auto",
                  crf: int = 20, timeout: float = 120.0) -> None:
    """Encode uint8 [n, H, W, 3] to an mp4, deterministically (1 thread, bit-exact flags)."""
    n, height, width, _ = frames.shape
    codec = resolve_codec(codec)
    codec_opts: dict[str, object] = {"vcodec": codec, "pix_fmt": "yuv420p", "threads": 1}
    if codec == "libx264":
        codec_opts.update(crf=crf, preset="veryfast")
    else:
        codec_opts.update(**{"q:v": 3})
    argv = (
        ffmpeg.input("pipe:", format="rawvideo", pix_fmt="rgb24", s=f"{width}x{height}",
                     framerate=fps)
        .output(str(path), r=fps, map_metadata=-1,
                **{"fflags": "+bitexact", "flags:v": "+bitexact"}, **codec_opts)
        .global_args("-hide_banner", "-nostdin", "-loglevel", "error")
        .overwrite_output()
        .compile(cmd=ffmpeg_exe())
    )
    try:
        proc = subprocess.run(argv, input=np.ascontiguousarray(frames).tobytes(),
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, timeout=timeout)
    except subprocess.TimeoutExpired as exc:
        raise TeachclipError(f"{path}: ffmpeg encode timed out after {timeout:g} s") from exc
    if proc.returncode != 0:
        raise TeachclipError(f"{path}: ffmpeg encode failed: "
                             f"{proc.stderr.decode('utf-8', 'replace')[-800:]}")


def _render_one(video: SynthVideo, params: SynthParams, video_dir: str) -> str:
    """Worker: render + encode one video (top level so a process pool can pickle it)."""
    path = Path(video_dir) / f"{video.video_id}.mp4"
    encode_frames(render_video_frames(video, params), path, fps=params.fps,
                  codec=params.codec, crf=params.crf)
    return video.video_id


# ----------------------------------------------------------------------------- dataset
def build_manifest(videos: Sequence[SynthVideo], root: Path | None = None) -> Manifest:
    """The manifest of a planned dataset (paths relative to the manifest dir)."""
    video_rows = [{"video_id": v.video_id, "path": f"{VIDEO_DIR}/{v.video_id}.mp4",
                   "split": v.split, "start": np.nan, "end": np.nan} for v in videos]
    caption_rows = [{"caption_id": f"{v.video_id}#{k}", "video_id": v.video_id,
                     "split": v.split, "text": text}
                    for v in videos for k, text in enumerate(v.captions)]
    return Manifest(pd.DataFrame(video_rows), pd.DataFrame(caption_rows), root)


def segments_table(videos: Sequence[SynthVideo], fps: int) -> pd.DataFrame:
    """segments.csv: one row per informative segment with a phrase for that segment alone."""
    rows = [{"video_id": v.video_id, "segment": i, "start": s.start_frame / fps,
             "end": s.end_frame / fps, "text": segment_phrase(s)}
            for v in videos for i, s in enumerate(v.segments)]
    return pd.DataFrame(rows, columns=["video_id", "segment", "start", "end", "text"])


def render_dataset(
    out_dir: str | Path,
    params: SynthParams,
    *,
    workers: int = 2,
    on_progress: Callable[[int], None] | None = None,
) -> Manifest:
    """Render videos, manifest, segments.csv and the plan into ``out_dir`` (via ``<out>.tmp``).

    The whole directory appears at once, so a killed render never looks like a finished dataset.
    ``workers <= 1`` renders in-process.
    """
    out_dir = Path(out_dir)
    videos = plan_dataset(params)
    tmp = out_dir.with_name(out_dir.name + ".tmp")
    if tmp.exists():
        shutil.rmtree(tmp)
    (tmp / VIDEO_DIR).mkdir(parents=True)
    try:
        video_dir = str(tmp / VIDEO_DIR)
        if workers <= 1:
            for video in videos:
                _render_one(video, params, video_dir)
                if on_progress is not None:
                    on_progress(1)
        else:
            with ProcessPoolExecutor(max_workers=workers) as pool:
                futures = [pool.submit(_render_one, v, params, video_dir) for v in videos]
                for future in as_completed(futures):
                    future.result()
                    if on_progress is not None:
                        on_progress(1)
        build_manifest(videos).save(tmp)
        segments_table(videos, params.fps).to_csv(tmp / SEGMENTS_FILE, index=False,
                                                  lineterminator="\n")
        plan = {"params": asdict(params), "codec": resolve_codec(params.codec),
                "videos": [asdict(v) for v in videos]}
        (tmp / PLAN_FILE).write_text(json.dumps(plan, indent=1, sort_keys=True) + "\n",
                                     encoding="utf-8")
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    publish_dir(tmp, out_dir)
    return Manifest.load(out_dir)


def load_plan(directory: str | Path) -> list[SynthVideo]:
    """Read back the plan written next to a rendered dataset (tests check captions against it)."""
    data = json.loads((Path(directory) / PLAN_FILE).read_text(encoding="utf-8"))
    return [SynthVideo(index=v["index"], video_id=v["video_id"], split=v["split"],
                       n_frames=v["n_frames"],
                       segments=tuple(Segment(**s) for s in v["segments"]),
                       captions=tuple(v["captions"])) for v in data["videos"]]
