"""Sampling policies: the ffmpeg fast path equals "decode every frame in Python, then sample"."""

from __future__ import annotations

import subprocess
from pathlib import Path

import numpy as np
import pytest

from pipeline.data.sampling import (
    official_frame_indices,
    pad_frames,
    sample_video,
    select_evenly,
    uniform_frame_indices,
)
from pipeline.data.video import decode_frames, ffmpeg_exe, probe


def _video(path: Path, fps: str, seconds: float) -> Path:
    # testsrc2 changes every frame, so a wrong index shows up as different pixels.
    subprocess.run([ffmpeg_exe(), "-hide_banner", "-loglevel", "error", "-y", "-f", "lavfi",
                    "-i", f"testsrc2=s=48x32:r={fps}:d={seconds}", "-threads", "1",
                    "-pix_fmt", "yuv420p", "-c:v", "libx264", "-preset", "ultrafast",
                    str(path)], check=True)
    return path


def test_official_indices_follow_spec() -> None:
    # 10 fps, 9.5 s -> 1 fps frames 0,10,...,90 (10 <= F) -> all kept.
    assert list(official_frame_indices(95, 10, 12)) == list(range(0, 95, 10))
    # 30 one-fps frames > F=12 -> linspace(0, 29, 12) truncated, times k.
    expected = (np.linspace(0, 29, 12).astype(int) * 10).tolist()
    assert official_frame_indices(300, 10, 12).tolist() == expected
    assert official_frame_indices(90, 29.97, 12).tolist() == [0, 29, 58, 87]  # k = int(fps)
    assert official_frame_indices(5, 0.5, 12).tolist() == [0, 1, 2, 3, 4]  # k >= 1
    assert select_evenly(3, 12).tolist() == [0, 1, 2]


def test_uniform_indices_are_bin_centres() -> None:
    assert uniform_frame_indices(120, 12).tolist() == list(range(5, 120, 10))
    assert uniform_frame_indices(7, 12).tolist() == list(range(7))
    idx = uniform_frame_indices(1000, 64)
    assert len(idx) == 64 and np.all(np.diff(idx) > 0) and idx[-1] < 1000


def test_pad_frames_masks_padding() -> None:
    frames = np.full((3, 2, 2, 3), 7, np.uint8)
    padded, mask = pad_frames(frames, 5)
    assert padded.shape == (5, 2, 2, 3) and mask.tolist() == [1, 1, 1, 0, 0]
    assert padded[3:].max() == 0 and padded[:3].min() == 7


@pytest.mark.parametrize(("fps", "seconds", "max_frames"),
                         [("10", 20, 12), ("25", 6, 12), ("30000/1001", 5, 3), ("8", 2.5, 12)])
@pytest.mark.parametrize("policy", ["official", "uniform"])
def test_fast_path_equals_brute_force(tmp_path: Path, fps: str, seconds: float,
                                      max_frames: int, policy: str) -> None:
    path = _video(tmp_path / "v.mp4", fps, seconds)
    every = decode_frames(path, size=24)  # every frame into Python
    if policy == "official":
        indices = official_frame_indices(len(every), probe(path).fps, max_frames)
        n_decoded = len(range(0, len(every), max(1, int(probe(path).fps))))
    else:
        indices = uniform_frame_indices(len(every), max_frames)
        n_decoded = len(every)
    sampled = sample_video(path, policy=policy, max_frames=max_frames, size=24)
    n = len(indices)
    assert sampled.mask.tolist() == [True] * n + [False] * (max_frames - n)
    assert sampled.n_decoded == n_decoded
    np.testing.assert_array_equal(sampled.frames[:n], every[indices])
    assert sampled.frames[n:].max(initial=0) == 0
