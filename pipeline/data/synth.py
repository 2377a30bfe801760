"""The embedded default dataset: synthetic mp4 videos of moving coloured shapes, with captions.

Why it looks like this: TeachCLIP's point is that some frames matter more than others. Each video
has 1–3 *informative* segments (a shape of a colour moving in a direction, sometimes with a size)
separated by *filler* (grey clutter, noise textures, drifting stripes drawn from one distribution
for every video, never a target shape) in random position and proportion. Captions describe the
informative segments in order, so a model that mean-pools all frames dilutes the signal, and one
that weights frames (AFA) can recover it. The (colour, shape, direction) sequence is unique within
each split, so a caption identifies its video only if the informative frames are attended.

Everything derives from one seed: the plan (attributes, timings, captions) comes from a master
generator, each video's pixels from a per-video generator, and the encoder runs single-threaded
with bit-exact flags, so the same seed gives byte-identical files.

Library only: :func:`plan_dataset` (pure), :func:`render_video_frames` (pure numpy),
:func:`encode_frames` (ffmpeg), :func:`render_dataset` (all of it, into a tmp dir renamed at
the end).
"""

from __future__ import annotations

import functools
import json
import os
import shutil
import subprocess
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import asdict, dataclass, field
from pathlib import Path

import ffmpeg
import numpy as np
import pandas as pd

from pipeline.errors import InputError, TeachclipError
from pipeline.data.manifest import Manifest
from pipeline.data.video import ffmpeg_exe

# ----------------------------------------------------------------------------- vocabulary
COLORS: dict[str, tuple[tuple[int, int, int], tuple[str, ...]]] = {
    "red": ((220, 30, 30), ("red", "crimson", "scarlet")),
    "green": ((30, 175, 50), ("green", "emerald")),
    "blue": ((40, 70, 235), ("blue", "cobalt")),
    "yellow": ((240, 220, 30), ("yellow", "golden")),
    "purple": ((150, 45, 200), ("purple", "violet")),
    "orange": ((250, 135, 15), ("orange", "tangerine")),
}
SHAPES: dict[str, tuple[str, ...]] = {
    "circle": ("circle", "disc", "ball"),
    "square": ("square", "box", "block"),
    "triangle": ("triangle", "three-sided shape"),
    "diamond": ("diamond", "rhombus"),
}
DIRECTIONS: dict[str, tuple[tuple[int, int], tuple[str, ...]]] = {
    # (dx, dy) in image coordinates (y grows downwards)
    "left": ((-1, 0), ("left", "to the left", "leftward")),
    "right": ((1, 0), ("right", "to the right", "rightward")),
    "up": ((0, -1), ("up", "upward", "toward the top")),
    "down": ((0, 1), ("down", "downward", "toward the bottom")),
}
SIZES: dict[str, tuple[float, tuple[str, ...]]] = {
    "small": (0.10, ("small", "tiny", "little")),
    "large": (0.17, ("large", "big")),
}
VERBS: tuple[tuple[str, str], ...] = (
    ("moves", "moving"), ("slides", "sliding"), ("glides", "gliding"),
    ("drifts", "drifting"), ("travels", "travelling"),
)
SEGMENTS_FILE = "segments.csv"
PLAN_FILE = "synth_plan.json"
VIDEO_DIR = "videos"


@dataclass(frozen=True)
class SynthParams:
    """Every knob of the synthetic set (the CLI options mirror these; defaults render in < 60 s)."""

    seed: int = 0
    n_train: int = 480
    n_val: int = 80
    n_test: int = 160
    captions_per_video: int = 3
    fps: int = 8
    min_duration: float = 10.0
    max_duration: float = 16.0
    resolution: int = 64
    min_segments: int = 1
    max_segments: int = 3
    min_segment_s: float = 2.0
    max_segment_s: float = 3.0
    size_mention_prob: float = 0.5
    # Real captions often describe only the salient part of a video: with this probability a
    # caption of a multi-segment video names a random non-empty proper subset of its segments
    # (in order). A single pooled vector then has to match a caption that covers part of the
    # video, which is where fine-grained (frame–word) teachers are strongest.
    partial_caption_prob: float = 0.0
    filler_difficulty: float = 0.5  # 0: flat background, 1: dense high-contrast clutter
    codec: str = "auto"  # libx264 when available, else mpeg4
    crf: int = 20

    def validate(self) -> None:
        """Reject parameter combinations that cannot produce a valid dataset."""
        if min(self.n_train, self.n_val, self.n_test) < 0 or self.captions_per_video < 1:
            raise InputError("video counts must be >= 0 and captions_per_video >= 1")
        if self.fps < 1 or self.resolution < 16:
            raise InputError("fps must be >= 1 and resolution >= 16")
        if not 1 <= self.min_segments <= self.max_segments:
            raise InputError("need 1 <= min_segments <= max_segments")
        if not 0 <= self.partial_caption_prob <= 1:
            raise InputError("partial_caption_prob must be in [0, 1]")
        if not 0 < self.min_segment_s <= self.max_segment_s:
            raise InputError("need 0 < min_segment_s <= max_segment_s")
        if not 0 < self.min_duration <= self.max_duration:
            raise InputError("need 0 < min_duration <= max_duration")
        if self.max_segments * self.max_segment_s > self.min_duration:
            raise InputError(
                f"max_segments × max_segment_s = {self.max_segments * self.max_segment_s:g} s "
                f"does not fit in min_duration = {self.min_duration:g} s"
            )
        if not 0.0 <= self.filler_difficulty <= 1.0:
            raise InputError("filler_difficulty must be in [0, 1]")


@dataclass(frozen=True)
class Segment:
    """One informative segment: frames ``[start_frame, end_frame)`` show this shape moving."""

    start_frame: int
    end_frame: int
    color: str
    shape: str
    direction: str
    size: str

    def key(self) -> tuple[str, str, str]:
        """The attributes captions always mention (size is optional in captions)."""
        return (self.color, self.shape, self.direction)


@dataclass(frozen=True)
class SynthVideo:
    """The plan of one video: everything needed to render it and to check its captions."""

    index: int
    video_id: str
    split: str
    n_frames: int
    segments: tuple[Segment, ...]
    captions: tuple[str, ...] = field(default_factory=tuple)


# ----------------------------------------------------------------------------- captions
def _with_article(words: str) -> str:
    return ("an " if words[0] in "aeiou" else "a ") + words


def segment_phrase(segment: Segment, *, with_size: bool = True) -> str:
    """Canonical phrase of one segment (segments.csv ``text``): "a small red circle moves left"."""
    size = f"{segment.size} " if with_size else ""
    noun = _with_article(f"{size}{segment.color} {segment.shape}")
    return f"{noun} moves {segment.direction}"


def _paraphrase(segment: Segment, rng: np.random.Generator, size_prob: float,
                gerund: bool) -> str:
    colour = str(rng.choice(COLORS[segment.color][1]))
    shape = str(rng.choice(SHAPES[segment.shape]))
    where = str(rng.choice(DIRECTIONS[segment.direction][1]))
    verb = VERBS[int(rng.integers(len(VERBS)))][1 if gerund else 0]
    words = f"{colour} {shape}"
    if rng.random() < size_prob:
        words = f"{rng.choice(SIZES[segment.size][1])} {words}"
    return f"{_with_article(words)} {verb} {where}"


def make_caption(segments: Sequence[Segment], rng: np.random.Generator, size_prob: float) -> str:
    """One paraphrased caption naming every segment in temporal order."""
    style = int(rng.integers(4))
    gerund = style == 3
    parts = [_paraphrase(s, rng, size_prob, gerund) for s in segments]
    if len(parts) == 1:
        prefix = ("", "", "we see ", "a clip of ")[style]
        return prefix + parts[0]
    if style == 0:
        return ", then ".join(parts)
    if style == 1:
        middle = [f"then {p}" for p in parts[1:-1]]
        return ", ".join([f"first {parts[0]}", *middle, f"and finally {parts[-1]}"])
    if style == 2:
        return "; after that, ".join(parts)
    return "a clip of " + " followed by ".join(parts)


def make_captions(segments: Sequence[Segment], n: int, rng: np.random.Generator,
                  size_prob: float, partial_prob: float = 0.0) -> tuple[str, ...]:
    """``n`` distinct paraphrases when the template space allows (else duplicates).

    With ``partial_prob`` a caption describes a random proper subset of the segments.
    """
    out: list[str] = []
    for _ in range(50 * n):
        described = _described_segments(segments, rng, partial_prob)
        caption = make_caption(described, rng, size_prob)
        if caption not in out:
            out.append(caption)
        if len(out) == n:
            break
    while len(out) < n:
        out.append(make_caption(segments, rng, size_prob))
    return tuple(out)


def _described_segments(segments: Sequence[Segment], rng: np.random.Generator,
                        partial_prob: float) -> Sequence[Segment]:
    """All segments, or (with ``partial_prob``) a random non-empty proper subset in order."""
    if len(segments) < 2 or partial_prob <= 0 or rng.random() >= partial_prob:
        return segments
    k = int(rng.integers(1, len(segments)))
    keep = np.sort(rng.choice(len(segments), size=k, replace=False))
    return [segments[int(i)] for i in keep]


# ----------------------------------------------------------------------------- plan
def _plan_segments(rng: np.random.Generator, params: SynthParams, n_frames: int,
                   n_segments: int) -> tuple[Segment, ...]:
    fps = params.fps
    lengths = rng.integers(round(params.min_segment_s * fps), round(params.max_segment_s * fps) + 1,
                           size=n_segments)
    filler = n_frames - int(lengths.sum())
    gaps = np.floor(rng.dirichlet(np.ones(n_segments + 1)) * filler).astype(int)
    gaps[-1] += filler - int(gaps.sum())
    colors, shapes = list(COLORS), list(SHAPES)
    directions, sizes = list(DIRECTIONS), list(SIZES)
    segments: list[Segment] = []
    cursor = 0
    for i in range(n_segments):
        cursor += int(gaps[i])
        while True:
            color = colors[int(rng.integers(len(colors)))]
            shape = shapes[int(rng.integers(len(shapes)))]
            if not segments or (segments[-1].color, segments[-1].shape) != (color, shape):
                break
        segments.append(Segment(
            start_frame=cursor, end_frame=cursor + int(lengths[i]), color=color, shape=shape,
            direction=directions[int(rng.integers(len(directions)))],
            size=sizes[int(rng.integers(len(sizes)))],
        ))
        cursor += int(lengths[i])
    return tuple(segments)


def plan_dataset(params: SynthParams) -> list[SynthVideo]:
    """Deterministic plan of every video (attributes, timings, captions), in split order.

    The (colour, shape, direction) sequence is unique within a split: rejection sampling makes the
    captions discriminative among the test set.
    """
    params.validate()
    rng = np.random.default_rng([params.seed, 0])
    videos: list[SynthVideo] = []
    index = 0
    for split, count in (("train", params.n_train), ("val", params.n_val),
                         ("test", params.n_test)):
        seen: set[tuple[tuple[str, str, str], ...]] = set()
        for _ in range(count):
            for _attempt in range(1000):
                seconds = rng.uniform(params.min_duration, params.max_duration)
                n_frames = max(1, round(seconds * params.fps))
                n_segments = int(rng.integers(params.min_segments, params.max_segments + 1))
                segments = _plan_segments(rng, params, n_frames, n_segments)
                key = tuple(s.key() for s in segments)
                if key not in seen:
                    break
            else:
                raise InputError(f"cannot make {count} distinct {split} videos from the "
                                 "attribute space; lower the count or raise max_segments")
            seen.add(key)
            captions = make_captions(segments, params.captions_per_video, rng,
                                     params.size_mention_prob, params.partial_caption_prob)
            videos.append(SynthVideo(index=index, video_id=f"synth{index:05d}", split=split,
                                     n_frames=n_frames, segments=segments, captions=captions))
            index += 1
    return videos


# ----------------------------------------------------------------------------- pixels
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
        radius = SIZES[segment.size][0] * res
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


def _replace_dir(tmp: Path, final: Path) -> None:
    """Move a finished tmp dir onto ``final`` (the old one, if any, is removed afterwards)."""
    old = final.with_name(final.name + ".old")
    if old.exists():
        shutil.rmtree(old)
    if final.exists():
        os.replace(final, old)
    os.replace(tmp, final)
    if old.exists():
        shutil.rmtree(old)


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
    _replace_dir(tmp, out_dir)
    return Manifest.load(out_dir)


def load_plan(directory: str | Path) -> list[SynthVideo]:
    """Read back the plan written next to a rendered dataset (tests check captions against it)."""
    data = json.loads((Path(directory) / PLAN_FILE).read_text(encoding="utf-8"))
    return [SynthVideo(index=v["index"], video_id=v["video_id"], split=v["split"],
                       n_frames=v["n_frames"],
                       segments=tuple(Segment(**s) for s in v["segments"]),
                       captions=tuple(v["captions"])) for v in data["videos"]]
