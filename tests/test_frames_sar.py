"""``frames --honor-sar``: videos with non-square pixels keep their shapes (a circle stays round),
while the default keeps the official loader's behaviour (pixels taken as square: squashed)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

from pipeline.data.frames_store import FramesReader
from pipeline.data.manifest import Manifest
from pipeline.data.video import decode_frames, ffmpeg_exe
from stages.cli import main

SIZE = 32
RADIUS = 20  # display pixels of the 64-pixel-high source


def _encode(path: Path, sar: str) -> None:
    """64×64 stored pixels holding an ellipse that displays as a circle at sample aspect
    ratio ``sar`` (2: pixels twice as wide as high; 1/2: twice as high; 1: square)."""
    sx, sy = {"2": (2, 1), "1/2": (1, 2), "1": (1, 1)}[sar]
    lum = f"if(lt(hypot((X-W/2)*{sx}\\,(Y-H/2)*{sy})\\,{RADIUS})\\,235\\,16)"
    subprocess.run([ffmpeg_exe(), "-hide_banner", "-loglevel", "error", "-f", "lavfi", "-i",
                    f"color=black:s=64x64:d=2:r=5,format=gray,geq=lum='{lum}',setsar={sar}",
                    "-pix_fmt", "yuv420p", "-y", str(path)], check=True)


def _extent(frame: np.ndarray) -> tuple[int, int]:
    """(width, height) in pixels of the bright shape."""
    ys, xs = np.nonzero(frame.mean(axis=-1) > 128)
    return int(xs.max() - xs.min() + 1), int(ys.max() - ys.min() + 1)


@pytest.fixture(scope="module")
def videos(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("sar")
    rows = []
    for name, sar in (("wide", "2"), ("tall", "1/2"), ("square", "1")):
        _encode(root / f"{name}.mp4", sar)
        rows.append({"video_id": name, "path": f"{name}.mp4", "split": "test"})
    captions = pd.DataFrame([{"caption_id": f"{r['video_id']}_0", "video_id": r["video_id"],
                              "split": "test", "text": "a white circle"} for r in rows])
    Manifest(pd.DataFrame(rows), captions, root=root).save(root)
    return root


def _frames(videos: Path, out: Path, *flags: str) -> FramesReader:
    result = CliRunner().invoke(main, ["frames", "--manifest", str(videos), "--out", str(out),
                                       "--size", str(SIZE), "--max-frames", "2", "--workers",
                                       "1", *flags])
    assert result.exit_code == 0, result.output
    return FramesReader(out)


def test_honor_sar_keeps_a_circle_round(videos: Path, tmp_path: Path) -> None:
    honoured = _frames(videos, tmp_path / "on.h5", "--honor-sar")
    pixels, _ = honoured.read([honoured.row_of(v) for v in ("wide", "tall", "square")])
    diameter = 2 * RADIUS * SIZE // 64  # the circle after the short side goes 64 → 32
    for frame in pixels[:, 0]:
        width, height = _extent(frame)
        assert abs(width - height) <= 2 and abs(width - diameter) <= 2, (width, height)
    with h5py.File(tmp_path / "on.h5", "r") as handle:
        assert handle.attrs["pixel_aspect"].startswith("display")


def test_default_is_the_official_squashed_decode(videos: Path, tmp_path: Path) -> None:
    default = _frames(videos, tmp_path / "default.h5")
    off = _frames(videos, tmp_path / "off.h5", "--no-honor-sar")
    assert default.digest == off.digest  # off is the default
    wide, tall, square = (default.read([default.row_of(v)])[0][0, 0]
                          for v in ("wide", "tall", "square"))
    w, h = _extent(wide)
    assert h > 1.7 * w  # the stored ellipse, as the official loader sees it
    w, h = _extent(tall)
    assert w > 1.7 * h
    assert abs(np.subtract(*_extent(square))) <= 1
    # exactly what plain ffmpeg resize + crop gives (nothing changed for existing pipelines)
    direct = decode_frames(videos / "wide.mp4", size=SIZE)
    assert np.array_equal(wide, direct[0])
    with h5py.File(tmp_path / "default.h5", "r") as handle:
        assert handle.attrs["pixel_aspect"].startswith("stored")


def test_square_pixels_are_unchanged_by_honor_sar(videos: Path) -> None:
    plain = decode_frames(videos / "square.mp4", size=SIZE)
    honoured = decode_frames(videos / "square.mp4", size=SIZE, honor_sar=True)
    assert np.array_equal(plain, honoured)
