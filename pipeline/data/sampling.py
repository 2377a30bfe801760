"""Frame sampling policies: which frames of a video end up in ``frames.h5``.

``official`` is SPEC §5 (the CLIP4Clip/TeachCLIP loader): frames at 1 fps, i.e. decoded frame
indices 0, k, 2k, … with ``k = int(fps)``; if more than F, keep ``linspace(0, n−1, F)`` truncated
to int; if fewer, pad with zeros and mask 0. ``uniform`` takes F frames at uniform timestamps (the
centre of F equal bins of the clip), useful for long videos where 1 fps is too dense.

The pure index functions are separate from :func:`sample_video` so tests can compare them against
a brute-force "decode every frame in Python, then sample" reference.
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import numpy as np

from pipeline.data.video import DecodeError, decode_frames, probe

POLICIES = ("official", "uniform")


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


def official_frame_indices(n_frames: int, fps: Fraction | float, max_frames: int) -> np.ndarray:
    """Source-frame indices the official policy keeps from a clip of ``n_frames`` frames."""
    stride = official_stride(fps)
    one_fps = np.arange(0, n_frames, stride)
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
) -> SampledVideo:
    """Decode one video (or clip) once and apply a sampling policy.

    ``official``: a probe gives fps, then ffmpeg's ``select`` keeps every k-th frame so only the
    1 fps frames are converted and scaled; the linspace runs in numpy. ``uniform``: every frame
    of the clip is decoded at the target size (the exact frame count is only known after decoding),
    then F are picked. ``honor_sar``: see :func:`pipeline.data.video.decode_frames`.
    """
    if policy not in POLICIES:
        raise ValueError(f"unknown sampling policy {policy!r}; expected one of {POLICIES}")
    if policy == "official":
        info = probe(path, timeout=timeout)
        if info.fps is None:
            raise DecodeError(path, "could not determine the frame rate")
        stride = official_stride(info.fps)
        decoded = decode_frames(path, size=size, start=start, end=end, every_nth=stride,
                                timeout=timeout, honor_sar=honor_sar)
        keep = select_evenly(len(decoded), max_frames)
        seconds = keep * stride / float(info.fps)
    else:
        decoded = decode_frames(path, size=size, start=start, end=end, timeout=timeout,
                                honor_sar=honor_sar)
        keep = uniform_frame_indices(len(decoded), max_frames)
        fps = _fps_or_none(path, timeout)
        seconds = keep / fps if fps else np.full(len(keep), np.nan)
    frames, mask = pad_frames(decoded[keep], max_frames)
    timestamps = np.full(max_frames, np.nan, dtype=np.float32)
    timestamps[: len(keep)] = seconds[:max_frames]
    return SampledVideo(frames=frames, mask=mask, n_decoded=len(decoded), timestamps=timestamps)


def _fps_or_none(path: str | Path, timeout: float) -> float | None:
    """The source frame rate for timestamps of the uniform policy (None if unknown)."""
    try:
        info = probe(path, timeout=timeout)
    except DecodeError:
        return None
    return float(info.fps) if info.fps else None
