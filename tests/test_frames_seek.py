"""Keyframe seeking (``pipeline.data.seek``) gives the plain path's frames byte for byte.

The cost model would skip seeking on these tiny videos, so ``worth_seeking`` is forced on and a
spy checks that the seek path really produced the frames; the plain path (``seek=False``, every
frame decoded from the file's first) is the reference, and on the indexed videos the official
loader's frame numbers (``tests/data/official_sampling.json``) are read back from the pixels.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

import pipeline.data.sampling as sampling
import pipeline.data.seek as seek
from pipeline.data.sampling import sample_video
from pipeline.data.seek import packet_index
from pipeline.data.video import ffmpeg_exe
from tests.test_frames_sampling import (
    OFFICIAL,
    SIDE,
    _indexed_frames,
    _official_cases,
    _read_index,
)


@pytest.fixture
def seek_spy(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[bool]]:
    """Force seeking whenever it is exact; record whether each try returned frames."""
    used: list[bool] = []
    real = sampling.seek_frames

    def spy(*args: object, **kwargs: object) -> np.ndarray | None:
        out = real(*args, **kwargs)  # type: ignore[arg-type]
        used.append(out is not None)
        return out

    monkeypatch.setattr(seek, "worth_seeking", lambda *a: True)
    monkeypatch.setattr(sampling, "worth_indexing", lambda *a: True)
    monkeypatch.setattr(sampling, "seek_frames", spy)
    yield used


def _encode_lavfi(path: Path, fps: str, seconds: float, codec: list[str],
                  size: str = "64x48") -> Path:
    subprocess.run([ffmpeg_exe(), "-hide_banner", "-loglevel", "error", "-y", "-f", "lavfi",
                    "-i", f"testsrc2=s={size}:r={fps}:d={seconds}", "-pix_fmt", "yuv420p",
                    "-threads", "1", *codec, str(path)], check=True)
    return path


X264_B = ["-c:v", "libx264", "-preset", "veryfast", "-bf", "3", "-g", "12"]
ENCODINGS = {
    "h264-bframes.mp4": ("25", X264_B),
    "h264-bframes-offset.mp4": ("30000/1001", [*X264_B, "-output_ts_offset", "3.3"]),
    "h264-nob.mkv": ("30000/1001", ["-c:v", "libx264", "-preset", "ultrafast", "-g", "9"]),
    "hevc.mp4": ("25", ["-c:v", "libx265", "-preset", "ultrafast", "-g", "12",
                        "-x265-params", "log-level=error"]),
    "vp9.webm": ("8", ["-c:v", "libvpx-vp9", "-deadline", "realtime", "-cpu-used", "8",
                       "-g", "10"]),
    "mpeg4.mp4": ("25", ["-c:v", "mpeg4", "-bf", "2", "-g", "12"]),
}


@pytest.mark.parametrize("name", list(ENCODINGS))
def test_seek_equals_plain_path(tmp_path: Path, seek_spy: list[bool], name: str) -> None:
    fps, codec = ENCODINGS[name]
    path = _encode_lavfi(tmp_path / name, fps, 14, codec)
    index = packet_index(path)
    assert index is not None and len(index.seek_frames) > 3
    for max_frames, start, end in ((12, None, None), (3, None, None), (5, 2.7, 9.2),
                                   (4, 6, 6), (64, 1, 30)):
        seek_spy.clear()
        plain = sample_video(path, policy="official", max_frames=max_frames, size=24,
                             start=start, end=end, seek=False)
        fast = sample_video(path, policy="official", max_frames=max_frames, size=24,
                            start=start, end=end, seek=True)
        assert seek_spy == [True], (max_frames, start, end)
        np.testing.assert_array_equal(fast.frames, plain.frames)
        np.testing.assert_array_equal(fast.mask, plain.mask)
        assert fast.n_decoded == plain.n_decoded
        np.testing.assert_array_equal(fast.timestamps, plain.timestamps)


def test_seek_honours_sample_aspect_ratio(tmp_path: Path, seek_spy: list[bool]) -> None:
    path = tmp_path / "sar.mp4"
    subprocess.run([ffmpeg_exe(), "-hide_banner", "-loglevel", "error", "-y", "-f", "lavfi",
                    "-i", "testsrc2=s=64x48:r=25:d=8,setsar=2", "-pix_fmt", "yuv420p",
                    *X264_B, str(path)], check=True)
    for honor_sar in (False, True):
        plain = sample_video(path, policy="official", max_frames=4, size=24,
                             honor_sar=honor_sar, seek=False)
        fast = sample_video(path, policy="official", max_frames=4, size=24,
                            honor_sar=honor_sar, seek=True)
        np.testing.assert_array_equal(fast.frames, plain.frames)
    assert seek_spy == [True, True]


@pytest.fixture(scope="module")
def indexed_gop_videos(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The official loader's indexed videos, re-encoded with a keyframe every 10 frames."""
    out = {}
    for video in OFFICIAL["videos"]:
        path = tmp_path_factory.mktemp("gop") / "v.mp4"
        subprocess.run([ffmpeg_exe(), "-hide_banner", "-loglevel", "error", "-y", "-f",
                        "rawvideo", "-pix_fmt", "rgb24", "-s", f"{SIDE}x{SIDE}", "-r",
                        video["fps"], "-i", "pipe:", "-threads", "1", "-pix_fmt", "yuv420p",
                        "-c:v", "libx264", "-preset", "veryfast", "-g", "10", "-bf", "3",
                        str(path)], input=_indexed_frames(video["n_frames"]).tobytes(),
                       check=True)
        out[video["fps"]] = path
    return out


@pytest.mark.parametrize("fps", ["25", "30000/1001"])
def test_seek_reproduces_official_loader(indexed_gop_videos: dict[str, Path],
                                         seek_spy: list[bool], fps: str) -> None:
    for case_fps, case in _official_cases():
        if case_fps != fps or (case["start"] is not None and case["start"] < 0):
            continue
        seek_spy.clear()
        sampled = sample_video(indexed_gop_videos[fps], policy="official",
                               max_frames=case["max_frames"], size=24, start=case["start"],
                               end=case["end"])
        n = len(case["indices"])
        assert [_read_index(f) for f in sampled.frames[:n]] == case["indices"], case
        assert sampled.mask.tolist() == [True] * n + [False] * (case["max_frames"] - n)
        assert seek_spy == [True], case


def test_unsafe_streams_are_not_sought(tmp_path: Path, seek_spy: list[bool]) -> None:
    # Open GOPs: H.264 flags non-IDR I frames as keyframes; decoding from them is not exact.
    open_gop = _encode_lavfi(tmp_path / "open.mp4", "25", 6,
                             [*X264_B, "-x264-params", "open-gop=1"])
    index = packet_index(open_gop)
    assert index is not None and not seek.keyframes_safe(open_gop, index)
    sampled = sample_video(open_gop, policy="official", max_frames=3, size=24)
    assert seek_spy == [False] and sampled.mask.all()
    closed = _encode_lavfi(tmp_path / "closed.mp4", "25", 6, X264_B)
    assert seek.keyframes_safe(closed, packet_index(closed))
    # MPEG-TS seeks to the next keyframe after a byte position, not the one before a time.
    assert packet_index(_encode_lavfi(tmp_path / "v.ts", "25", 4, X264_B)) is None
    (tmp_path / "junk.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42" + bytes(300))
    assert packet_index(tmp_path / "junk.mp4") is None


def test_fallback_when_seeking_does_not_pay(tmp_path: Path,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    path = _encode_lavfi(tmp_path / "v.mp4", "25", 6, X264_B)
    calls: list[int] = []
    real = sampling.decode_frames
    monkeypatch.setattr(sampling, "decode_frames",
                        lambda *a, **k: calls.append(1) or real(*a, **k))
    # 64×48 px: an extra ffmpeg input costs more than the frames it saves, so plain decoding.
    sampled = sample_video(path, policy="official", max_frames=4, size=24)
    assert calls == [1] and sampled.mask.all()
    index = packet_index(path)
    assert index is not None
    groups = seek._groups(index, np.array([0, 50, 100, 149]))
    assert not seek.worth_seeking(groups, 150, index.pixels)
    # At 720p the same plan (4 short runs from their keyframes) is worth it.
    assert seek.worth_seeking(groups, 150, 1280 * 720)
    # Before indexing: 120 s of 720p at 25 fps, 12 of 120 seconds kept: index it; not when
    # every second is kept, nor for 10 s at 320×240 (decoding it all takes ~50 ms).
    assert seek.worth_indexing(3000, 1280 * 720, 120, 12)
    assert not seek.worth_indexing(3000, 1280 * 720, 120, 120)
    assert not seek.worth_indexing(250, 320 * 240, 10, 4)
