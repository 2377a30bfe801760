"""Sampling policies: the ffmpeg fast path equals "decode every frame in Python, then sample"."""

from __future__ import annotations

import json
import subprocess
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest

from pipeline.data.sampling import (
    POLICIES,
    POLICY_RULES,
    OfficialSeconds,
    official_frame_indices,
    official_seconds,
    pad_frames,
    sample_video,
    select_evenly,
    uniform_frame_indices,
)
from pipeline.data.video import DecodeError, decode_frames, ffmpeg_exe, probe


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
@pytest.mark.parametrize("policy", ["official", "exact_time", "uniform"])
def test_fast_path_equals_brute_force(tmp_path: Path, fps: str, seconds: float,
                                      max_frames: int, policy: str) -> None:
    path = _video(tmp_path / "v.mp4", fps, seconds)
    every = decode_frames(path, size=24)  # every frame into Python
    if policy in ("official", "exact_time"):  # identical for whole videos
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


# ------------------------------------------------- the official loader on clips with start/end
OFFICIAL = json.loads((Path(__file__).parent / "data" / "official_sampling.json")
                      .read_text(encoding="utf-8"))
SIDE, BLOCK, BITS = 32, 8, 16


def _indexed_frames(n: int) -> np.ndarray:
    """Frame i shows i in binary: 16 blocks of 8×8 px, bit b white (235) or black (16) — the
    same frames the official loader was run on (tests/data/official_sampling.json)."""
    frames = np.full((n, SIDE, SIDE, 3), 16, np.uint8)
    for i in range(n):
        for b in range(BITS):
            if (i >> b) & 1:
                r, c = divmod(b, 4)
                frames[i, r * BLOCK:(r + 1) * BLOCK, c * BLOCK:(c + 1) * BLOCK] = 235
    return frames


def _read_index(frame: np.ndarray) -> int:
    """The index an indexed frame shows, read at block centres (any square size)."""
    scale = frame.shape[0] / SIDE
    value = 0
    for b in range(BITS):
        r, c = divmod(b, 4)
        if frame[int((r + 0.5) * BLOCK * scale), int((c + 0.5) * BLOCK * scale)].mean() > 125:
            value |= 1 << b
    return value


@pytest.fixture(scope="module")
def indexed_videos(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    out = {}
    for video in OFFICIAL["videos"]:
        path = tmp_path_factory.mktemp("indexed") / "v.mp4"
        subprocess.run([ffmpeg_exe(), "-hide_banner", "-loglevel", "error", "-y", "-f",
                        "rawvideo", "-pix_fmt", "rgb24", "-s", f"{SIDE}x{SIDE}", "-r",
                        video["fps"], "-i", "pipe:", "-threads", "1", "-pix_fmt", "yuv420p",
                        "-c:v", "libx264", "-preset", "ultrafast", str(path)],
                       input=_indexed_frames(video["n_frames"]).tobytes(), check=True)
        every = decode_frames(path)
        assert [_read_index(f) for f in every] == list(range(video["n_frames"]))
        out[video["fps"]] = path
    return out


def _official_cases() -> list[tuple[str, dict]]:
    return [(video["fps"], case) for video in OFFICIAL["videos"] for case in video["cases"]]


def _ids(item: tuple[str, dict]) -> str:
    fps, case = item
    return f"{fps.replace('/', '_')}fps-{case['start']}-{case['end']}-F{case['max_frames']}"


def test_official_seconds_rules() -> None:
    assert official_seconds(None, None) == OfficialSeconds(0, None)
    assert official_seconds(2.7, 9.2) == OfficialSeconds(2, 9)  # truncation, end included
    assert official_seconds(7.9, 2.2) == OfficialSeconds(2, 7)  # swapped
    assert official_seconds(3, 3) == OfficialSeconds(3, 4)  # widened by one second
    assert official_seconds(0, 31) == OfficialSeconds(0, 31)  # DiDeMo paragraphs
    assert official_seconds(-1.5, 4) == OfficialSeconds(0, 4)  # clamped (official: fails)
    assert official_seconds(5.0, None) == OfficialSeconds(5, None)


@pytest.mark.parametrize("item", _official_cases(), ids=_ids)
def test_official_policy_reproduces_official_loader(indexed_videos: dict[str, Path],
                                                    item: tuple[str, dict]) -> None:
    """Real encoded videos at 25 and 29.97 fps, whole and with sub-ranges: the frames chosen
    (read back from their pixels), their number and the mask equal the official loader's."""
    fps, case = item
    start, end, max_frames = case["start"], case["end"], case["max_frames"]
    expected = case["indices"]
    if start is not None and start < 0:  # official fails on a negative start (see the JSON)
        assert expected == [] and case["n_real"] == 0
        clamped = next(c for f, c in _official_cases() if f == fps and c["start"] == 0
                       and c["end"] == end and c["max_frames"] == max_frames)
        expected = clamped["indices"]
    sampled = sample_video(indexed_videos[fps], policy="official", max_frames=max_frames,
                           size=24, start=start, end=end)
    n = len(expected)
    assert [_read_index(f) for f in sampled.frames[:n]] == expected
    assert sampled.mask.tolist() == [True] * n + [False] * (max_frames - n)
    assert sampled.frames[n:].max(initial=0) == 0
    n_frames = next(v["n_frames"] for v in OFFICIAL["videos"] if v["fps"] == fps)
    assert official_frame_indices(n_frames, Fraction(fps), max_frames, start, end).tolist() \
        == expected
    if max_frames >= 64:  # nothing dropped by the linspace: every 1 fps frame was read
        assert sampled.n_decoded == n
    times = np.asarray(expected) / float(Fraction(fps)) - max(start or 0.0, 0.0)
    np.testing.assert_allclose(sampled.timestamps[:n], times, atol=1e-4)


def test_official_clip_past_the_end_is_a_decode_error(indexed_videos: dict[str, Path]) -> None:
    with pytest.raises(DecodeError, match="past the end of the video"):
        sample_video(indexed_videos["25"], policy="official", max_frames=4, size=24,
                     start=20, end=25)


@pytest.mark.parametrize("fps", ["25", "30000/1001"])
def test_exact_time_policy_follows_real_time(indexed_videos: dict[str, Path], fps: str) -> None:
    """``exact_time``: every k-th frame from the first frame at or after ``start`` while the
    frame time is before ``end``; equal to ``official`` for a whole video, not for a clip."""
    path = indexed_videos[fps]
    rate = float(Fraction(fps))
    k = int(rate)
    start, end = 2.7, 9.2
    first = int(np.ceil(start * rate - 1e-9))
    expected = [i for i in range(first, int(14 * rate), k) if i / rate < end]
    clip = sample_video(path, policy="exact_time", max_frames=64, size=24, start=start, end=end)
    got = [_read_index(f) for f in clip.frames[: int(clip.mask.sum())]]
    assert got == expected
    official = sample_video(path, policy="official", max_frames=64, size=24, start=start, end=end)
    assert [_read_index(f) for f in official.frames[: int(official.mask.sum())]] != got
    whole_exact = sample_video(path, policy="exact_time", max_frames=12, size=24)
    whole_official = sample_video(path, policy="official", max_frames=12, size=24)
    np.testing.assert_array_equal(whole_exact.frames, whole_official.frames)
    np.testing.assert_array_equal(whole_exact.mask, whole_official.mask)


def test_every_policy_has_a_rule() -> None:
    assert set(POLICY_RULES) == set(POLICIES)
