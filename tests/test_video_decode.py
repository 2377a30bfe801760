"""Decoding: probe without ffprobe, resize + centre crop in the filter graph, clips, errors."""

from __future__ import annotations

import subprocess
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest

from pipeline.data.video import DecodeError, decode_frames, ffmpeg_exe, parse_probe, probe


def make_video(path: Path, source: str, seconds: float, fps: str, size: str) -> Path:
    """A tiny test video from an ffmpeg lavfi source (libx264 yuv420p, 1 thread)."""
    sep = ":" if "=" in source else "="
    subprocess.run(
        [ffmpeg_exe(), "-hide_banner", "-loglevel", "error", "-y", "-f", "lavfi", "-i",
         f"{source}{sep}s={size}:r={fps}:d={seconds}", "-threads", "1", "-pix_fmt", "yuv420p",
         "-c:v", "libx264", "-preset", "ultrafast", "-qp", "0", str(path)],
        check=True,
    )
    return path


def test_known_colour_decodes_to_that_colour(tmp_path: Path) -> None:
    video = make_video(tmp_path / "c.mp4", "color=c=0x3366CC", 2, "5", "80x48")
    frames = decode_frames(video, size=32)
    assert frames.shape == (10, 32, 32, 3) and frames.dtype == np.uint8
    assert np.abs(frames.astype(int) - [0x33, 0x66, 0xCC]).max() <= 4
    native = decode_frames(video)
    assert native.shape == (10, 48, 80, 3)


def test_short_side_resize_then_centre_crop(tmp_path: Path) -> None:
    # 96x48: left third red, middle third green, right third blue. Short side 48 -> 32 gives
    # 64x32; the centre 32x32 crop keeps x in [16, 48) of 64 = the middle half: green only
    # in its centre, red/blue never reach it except at the edges.
    src = ("color=c=red:s=96x48:r=4:d=1[a];color=c=0x00FF00:s=32x48:r=4:d=1[g];"
           "color=c=blue:s=32x48:r=4:d=1[b];[a][g]overlay=32:0[ag];[ag][b]overlay=64:0")
    path = tmp_path / "bars.mp4"
    subprocess.run([ffmpeg_exe(), "-hide_banner", "-loglevel", "error", "-y",
                    "-filter_complex", src, "-frames:v", "4", "-pix_fmt", "yuv444p",
                    "-c:v", "libx264", "-qp", "0", str(path)], check=True)
    frames = decode_frames(path, size=32)
    assert frames.shape == (4, 32, 32, 3)
    centre = frames[0, :, 12:20].astype(int)
    assert np.abs(centre - [0, 255, 0]).max() <= 8
    assert frames[0, 16, 0, 0] > 100 and frames[0, 16, -1, 2] > 100  # red / blue edges


def test_probe_reads_duration_fps_and_size(tmp_path: Path) -> None:
    video = make_video(tmp_path / "p.mp4", "testsrc2", 3, "25", "64x36")
    info = probe(video)
    assert info.fps == 25 and (info.width, info.height) == (64, 36)
    assert info.duration == pytest.approx(3.0, abs=0.1)


def test_parse_probe_ntsc_and_k_rates() -> None:
    text = ("  Duration: 00:01:02.50, start: 0.000000, bitrate: 1 kb/s\n"
            "  Stream #0:0[0x1](und): Video: h264 (High) (avc1 / 0x31637661), yuv420p(tv, "
            "bt709, progressive), 640x360 [SAR 1:1 DAR 16:9], 100 kb/s, 29.97 fps, 29.97 tbr\n")
    info = parse_probe(text)
    assert info.duration == pytest.approx(62.5)
    assert info.fps == Fraction("29.97") and int(info.fps) == 29
    assert (info.width, info.height) == (640, 360)
    assert parse_probe(text.replace("29.97 fps", "1k fps")).fps == 1000


def test_clip_start_end(tmp_path: Path) -> None:
    video = make_video(tmp_path / "t.mp4", "testsrc2", 4, "10", "32x32")
    assert len(decode_frames(video, size=16, start=1.0, end=2.5)) == 15
    assert len(decode_frames(video, size=16, start=1.0, end=2.5, every_nth=5)) == 3


@pytest.mark.parametrize("kind", ["missing", "empty", "corrupt"])
def test_bad_files_raise_decode_error_with_reason(tmp_path: Path, kind: str) -> None:
    path = tmp_path / f"{kind}.mp4"
    if kind == "empty":
        path.write_bytes(b"")
    elif kind == "corrupt":
        path.write_bytes(b"\x00\x00\x00\x18ftypmp42" + bytes(range(256)) * 8)
    with pytest.raises(DecodeError) as info:
        decode_frames(path, size=16)
    assert info.value.path == str(path)
    expected = {"missing": "not found", "empty": "0 bytes", "corrupt": "status"}[kind]
    assert expected in info.value.reason
    if kind == "corrupt":
        assert info.value.stderr_tail  # ffmpeg's own words reach the user
        with pytest.raises(DecodeError):
            probe(path)
