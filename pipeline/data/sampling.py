"""Frame sampling policies: which frames of a video end up in ``frames.h5``.

``official`` is the CLIP4Clip/TeachCLIP loader (method §5), for whole videos and clips alike. It
works in integer seconds at an integer frame rate ``k = int(fps)``: a clip ``[start, end]`` from a
manifest becomes the seconds ``a = int(start) … b = int(end)`` (negatives 0, swapped if reversed,
``b = a + 1`` if equal), and the loader reads source frame ``s·k`` for every second
``a ≤ s ≤ b`` that exists, **the end second included**. A whole video is ``a = 0`` to its end, so
its frames are 0, k, 2k, …. At 29.97 fps ``k = 29``, so "second" s is frame 29·s, slightly before
real time s. Then, if more than F, ``linspace(0, n−1, F)`` truncated to int; fewer are padded with
zeros and mask 0. ``tests/data/official_sampling.json`` holds what the official loader returns.

``exact_time`` keeps the same 1 fps stride but over the real-time clip ``[start, end)`` (seek to
``start``, every k-th frame from there, stop before ``end``). For whole videos it equals
``official``; for sub-range clips it follows the annotation's real times instead of the official
integer-second rounding (e.g. DiDeMo's ``[0, 31]`` gives 31 frames, not 32). ``uniform`` takes F
frames at uniform timestamps (the centre of F equal bins of the clip), useful for long videos
where 1 fps is too dense.

The pure index functions are separate from :func:`sample_video` so tests can compare them against
a brute-force "decode every frame in Python, then sample" reference.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import numpy as np

from pipeline.data.seek import packet_index, seek_frames, worth_indexing
from pipeline.data.video import DecodeError, VideoInfo, decode_frames, probe

POLICIES = ("official", "exact_time", "uniform")

#: One-line rule per policy, for provenance attributes of frames.h5.
POLICY_RULES: dict[str, str] = {
    "official": ("official loader: frames s*k (k=int(fps)) for integer seconds "
                 "int(start)..int(end) inclusive (whole video: 0..end), then linspace(0,n-1,F) "
                 "truncated; pad with mask 0"),
    "exact_time": ("1 fps (every k-th frame, k=int(fps)) over the real-time clip [start, end), "
                   "then linspace(0,n-1,F) truncated; pad with mask 0"),
    "uniform": "F frames at the centres of F equal bins; pad with mask 0",
}


@dataclass(frozen=True)
class SampledVideo:
    """One video's sampled frames, padded to F: what one row of frames.h5 holds."""

    frames: np.ndarray  # uint8 [F, H, W, 3], padded rows are 0
    mask: np.ndarray  # bool [F]
    n_decoded: int  # frames actually decoded (before linspace/padding)
    timestamps: np.ndarray | None = None  # float32 [F]: seconds from the clip start, NaN = pad


def official_stride(fps: Fraction | float) -> int:
    """``k = int(fps)`` (at least 1): the official loader's step for 1 fps sampling."""
    return max(1, int(fps))


@dataclass(frozen=True)
class OfficialSeconds:
    """The integer seconds the official loader reads: ``first`` … ``last`` inclusive."""

    first: int
    last: int | None  # None: to the end of the video


def official_seconds(start: float | None, end: float | None) -> OfficialSeconds:
    """The official dataloaders' clip arithmetic on a manifest's ``start``/``end`` (seconds).

    ``int()`` truncation, negatives → 0, reversed bounds swapped, equal bounds widened by one
    second. A missing start means 0 and a missing end the end of the video (the official loaders
    always pass both or neither). Deliberate difference: a negative start is clamped to 0 here,
    while the official loader's clamp yields the float 0.0 that its own assertion then rejects,
    so such a clip comes out all padding there.
    """
    if start is None and end is None:
        return OfficialSeconds(0, None)
    first = max(0, int(start)) if start is not None else 0
    if end is None:
        return OfficialSeconds(first, None)
    last = max(0, int(end))
    if first > last:
        first, last = last, first
    elif first == last:
        last += 1
    return OfficialSeconds(first, last)


def official_frame_indices(
    n_frames: int,
    fps: Fraction | float,
    max_frames: int,
    start: float | None = None,
    end: float | None = None,
) -> np.ndarray:
    """Source-frame indices the official policy keeps from a video of ``n_frames`` frames."""
    stride = official_stride(fps)
    seconds = official_seconds(start, end)
    stop = n_frames if seconds.last is None else min(n_frames, seconds.last * stride + 1)
    one_fps = np.arange(seconds.first * stride, stop, stride)
    return one_fps[select_evenly(len(one_fps), max_frames)]


def select_evenly(n: int, max_frames: int) -> np.ndarray:
    """``linspace(0, n−1, F)`` truncated to int when n > F, else all of ``range(n)``."""
    if n > max_frames:
        return np.linspace(0, n - 1, num=max_frames).astype(np.int64)
    return np.arange(n, dtype=np.int64)


def uniform_frame_indices(n_frames: int, max_frames: int) -> np.ndarray:
    """Indices of F frames at the centres of F equal time bins (all frames if n ≤ F)."""
    if n_frames <= max_frames:
        return np.arange(n_frames, dtype=np.int64)
    centres = (np.arange(max_frames) + 0.5) * n_frames / max_frames
    return np.minimum(np.floor(centres).astype(np.int64), n_frames - 1)


def pad_frames(frames: np.ndarray, max_frames: int) -> tuple[np.ndarray, np.ndarray]:
    """Pad [n, H, W, 3] to [F, H, W, 3] with zeros; mask marks the real frames."""
    n = min(len(frames), max_frames)
    out = np.zeros((max_frames, *frames.shape[1:]), dtype=np.uint8)
    out[:n] = frames[:n]
    mask = np.zeros(max_frames, dtype=bool)
    mask[:n] = True
    return out, mask


def sample_video(
    path: str | Path,
    *,
    policy: str,
    max_frames: int,
    size: int,
    start: float | None = None,
    end: float | None = None,
    timeout: float = 300.0,
    honor_sar: bool = False,
    seek: bool | None = None,
) -> SampledVideo:
    """Decode one video (or clip) once and apply a sampling policy (see the module docstring).

    ``official`` / ``exact_time``: a probe gives fps, then ffmpeg keeps every k-th frame so only
    the 1 fps frames are converted and scaled; the linspace runs in numpy. ``uniform``: every
    frame of the clip is decoded at the target size (the exact frame count is only known after
    decoding), then F are picked. ``timestamps`` are seconds from the clip's ``start`` (negative
    for ``official`` frames before it: the official loader starts at ``int(start)``).
    ``honor_sar``: see :func:`pipeline.data.video.decode_frames`. ``seek`` (``official`` only):
    decode from the keyframe before each kept frame when that is exact and cheaper
    (:mod:`pipeline.data.seek`; byte-identical frames); None = on unless the environment sets
    ``TEACHCLIP_FRAMES_SEEK=0``.
    """
    if policy not in POLICIES:
        raise ValueError(f"unknown sampling policy {policy!r}; expected one of {POLICIES}")
    if seek is None:
        seek = os.environ.get("TEACHCLIP_FRAMES_SEEK", "1") != "0"
    if policy == "official":
        kept, n_decoded, seconds = _sample_official(path, max_frames, size, start, end, timeout,
                                                    honor_sar, seek)
    else:
        sampler = {"exact_time": _sample_exact_time, "uniform": _sample_uniform}[policy]
        kept, n_decoded, seconds = sampler(path, max_frames, size, start, end, timeout,
                                           honor_sar)
    frames, mask = pad_frames(kept, max_frames)
    timestamps = np.full(max_frames, np.nan, dtype=np.float32)
    timestamps[: len(kept)] = seconds[:max_frames]
    return SampledVideo(frames=frames, mask=mask, n_decoded=n_decoded, timestamps=timestamps)


#: What every policy's sampler returns: kept frames [n,H,W,3], frames decoded, their seconds [n].
Sampled = tuple[np.ndarray, int, np.ndarray]


def _probe_fps(path: str | Path, timeout: float) -> Fraction:
    info = probe(path, timeout=timeout)
    if info.fps is None:
        raise DecodeError(path, "could not determine the frame rate")
    return info.fps


def _sample_official(
    path: str | Path, max_frames: int, size: int, start: float | None, end: float | None,
    timeout: float, honor_sar: bool = False, seek: bool = True,
) -> Sampled:
    """The official loader's frames (module docstring), addressed by frame number as it does.

    Decoding starts at the file's first frame and ``trim`` drops frames before ``first·k`` (no
    time-based seek, whose result would depend on timestamps and on the frame rate ffmpeg prints
    rounded), then every k-th frame; ffmpeg stops after the last second's frame. With ``seek``,
    the same frame numbers are first tried from the keyframes before them (:func:`_seek_official`).
    """
    info = probe(path, timeout=timeout)
    if info.fps is None:
        raise DecodeError(path, "could not determine the frame rate")
    fps = info.fps
    stride = official_stride(fps)
    seconds = official_seconds(start, end)
    count = None if seconds.last is None else seconds.last - seconds.first + 1
    first_frame = seconds.first * stride
    offset = start if start is not None and start > 0 else 0.0
    sought = None
    if seek and _seek_may_pay(info, stride, first_frame, count, max_frames):
        sought = _seek_official(path, first_frame, stride, count, max_frames, size, timeout,
                                honor_sar)
    if sought is not None:
        frames, n_one_fps, keep = sought
        return frames, n_one_fps, (first_frame + keep * stride) / float(fps) - offset
    try:
        decoded = decode_frames(path, size=size, every_nth=stride, first_frame=first_frame,
                                max_output_frames=count, timeout=timeout, honor_sar=honor_sar)
    except DecodeError as exc:
        if exc.reason != "no frames decoded":
            raise
        raise DecodeError(path, f"no frames in the clip: the official loader reads seconds "
                          f"{seconds.first}..{seconds.last} (frames from {first_frame} on), "
                          f"past the end of the video", exc.stderr_tail) from exc
    keep = select_evenly(len(decoded), max_frames)
    return decoded[keep], len(decoded), (first_frame + keep * stride) / float(fps) - offset


def _seek_may_pay(info: VideoInfo, stride: int, first_frame: int, count: int | None,
                  max_frames: int) -> bool:
    """The probe's estimate (duration × fps) for :func:`pipeline.data.seek.worth_indexing`."""
    if info.duration is None or info.fps is None or not info.width or not info.height:
        return False
    n_frames = info.duration * float(info.fps)
    n_one_fps = max(0.0, n_frames - first_frame) / stride
    if count is not None:
        n_one_fps = min(n_one_fps, count)
    return worth_indexing(n_frames, info.width * info.height, n_one_fps, max_frames)


def _seek_official(
    path: str | Path, first_frame: int, stride: int, count: int | None, max_frames: int,
    size: int, timeout: float, honor_sar: bool,
) -> tuple[np.ndarray, int, np.ndarray] | None:
    """(kept frames, 1 fps frames the plain path decodes, kept positions) by keyframe seeking,
    or None where that is not exact or not cheaper. The frame count comes from the packets, so
    ``n_decoded`` and the linspace are the plain path's."""
    index = packet_index(path, timeout=timeout)
    if index is None:
        return None
    n_one_fps = len(range(first_frame, len(index.pts), stride))
    if count is not None:
        n_one_fps = min(n_one_fps, count)
    if n_one_fps == 0:
        return None
    keep = select_evenly(n_one_fps, max_frames)
    frames = seek_frames(path, index, first_frame + keep * stride,
                         plain_frames=first_frame + (n_one_fps - 1) * stride + 1, size=size,
                         timeout=timeout, honor_sar=honor_sar)
    return None if frames is None else (frames, n_one_fps, keep)


def _sample_exact_time(
    path: str | Path, max_frames: int, size: int, start: float | None, end: float | None,
    timeout: float, honor_sar: bool = False,
) -> Sampled:
    """Every k-th frame of the real-time clip ``[start, end)`` (seek to ``start``), linspace."""
    fps = _probe_fps(path, timeout)
    stride = official_stride(fps)
    decoded = decode_frames(path, size=size, start=start, end=end, every_nth=stride,
                            timeout=timeout, honor_sar=honor_sar)
    keep = select_evenly(len(decoded), max_frames)
    return decoded[keep], len(decoded), keep * stride / float(fps)


def _sample_uniform(
    path: str | Path, max_frames: int, size: int, start: float | None, end: float | None,
    timeout: float, honor_sar: bool = False,
) -> Sampled:
    """Every frame of the clip decoded, F picked at the centres of equal bins."""
    decoded = decode_frames(path, size=size, start=start, end=end, timeout=timeout,
                            honor_sar=honor_sar)
    keep = uniform_frame_indices(len(decoded), max_frames)
    fps = _fps_or_none(path, timeout)
    return decoded[keep], len(decoded), keep / fps if fps else np.full(len(keep), np.nan)


def _fps_or_none(path: str | Path, timeout: float) -> float | None:
    """The source frame rate for timestamps of the uniform policy (None if unknown)."""
    try:
        info = probe(path, timeout=timeout)
    except DecodeError:
        return None
    return float(info.fps) if info.fps else None
