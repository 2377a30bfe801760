"""The frames stage: failures listed and excluded, the failure gate, resume after a kill, reader."""

from __future__ import annotations

import pickle
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

import pipeline.data.frames_build as frames_stage
from pipeline.data.frames_build import FramesConfig, build_frames
from pipeline.data.frames_store import FramesReader
from pipeline.data.manifest import Manifest
from pipeline.data.sampling import sample_video
from pipeline.data.synth import render_dataset
from pipeline.data.synth_plan import SynthParams
from pipeline.errors import InputError
from stages.cli import main

PARAMS = SynthParams(seed=1, n_train=5, n_val=2, n_test=3, fps=5, min_duration=4.0,
                     max_duration=4.0, resolution=32, max_segments=1, min_segment_s=1.0,
                     max_segment_s=2.0)
CONFIG = FramesConfig(max_frames=4, size=16)


@pytest.fixture(scope="module")
def synth_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("frames") / "synth"
    render_dataset(out, PARAMS, workers=2)
    return out


def _with_bad_videos(synth_dir: Path, tmp_path: Path) -> Path:
    """Copy of the manifest where 3 of 10 videos are corrupt / empty / missing."""
    manifest = Manifest.load(synth_dir)
    videos = manifest.videos.copy()
    videos["path"] = [str(p) for p in manifest.resolved_paths()]
    (tmp_path / "corrupt.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42" + bytes(300))
    (tmp_path / "empty.mp4").write_bytes(b"")
    videos.loc[1, "path"] = str(tmp_path / "corrupt.mp4")
    videos.loc[4, "path"] = str(tmp_path / "empty.mp4")
    videos.loc[7, "path"] = str(tmp_path / "missing.mp4")
    out = tmp_path / "manifest"
    Manifest(videos, manifest.captions).save(out)
    return out


def test_failures_listed_excluded_and_order_kept(synth_dir: Path, tmp_path: Path) -> None:
    manifest = Manifest.load(_with_bad_videos(synth_dir, tmp_path))
    out = tmp_path / "frames.h5"
    report = build_frames(manifest, out, CONFIG, workers=2, max_failed_fraction=0.5)
    ids = list(manifest.videos["video_id"])
    bad = [ids[1], ids[4], ids[7]]
    reader = FramesReader(out)
    assert reader.video_ids == [v for v in ids if v not in bad]
    assert reader.failed_ids == bad and [f for f, _ in report.failures] == bad
    reasons = dict(zip(reader.failed_ids, reader.failed_reasons, strict=True))
    assert "0 bytes" in reasons[ids[4]] and "not found" in reasons[ids[7]]
    assert "moov atom not found" in reasons[ids[1]]  # ffmpeg's own message
    frames, mask = reader.read(range(len(reader)))
    assert frames.shape == (7, 4, 16, 16, 3) and mask.all()
    assert frames.reshape(7, -1).max(1).min() > 0  # nothing zero-filled
    single = sample_video(manifest.resolved_paths()[2], policy="official", max_frames=4, size=16)
    np.testing.assert_array_equal(frames[reader.row_of(ids[2])], single.frames)
    with h5py.File(out) as handle:
        assert handle.attrs["schema"] == "teachclip.frames"
        assert handle.attrs["manifest_digest"] == manifest.digest()
        assert handle["frames"].chunks == (1, 4, 16, 16, 3)
        assert "done" not in handle and handle["n_decoded"][0] == 4
    assert not out.with_name("frames.h5.tmp").exists()


def test_gate_fails_stage_and_leaves_no_final_file(synth_dir: Path, tmp_path: Path) -> None:
    manifest_dir = _with_bad_videos(synth_dir, tmp_path)
    out = tmp_path / "frames.h5"
    with pytest.raises(InputError, match="3 of 10 videos failed"):
        build_frames(Manifest.load(manifest_dir), out, CONFIG, workers=1,
                     max_failed_fraction=0.2)
    assert not out.exists()
    result = CliRunner().invoke(main, ["frames", "--manifest", str(manifest_dir), "--out",
                                       str(out), "--max-frames", "4", "--size", "16",
                                       "--max-failed-fraction", "0.05"])
    assert result.exit_code == 1 and "failed to decode" in result.output
    assert "--max-failed-fraction 0.05" in result.output  # names the option to change
    assert not out.exists()


class _Killed(Exception):
    pass


def test_resume_after_kill_skips_done_videos(synth_dir: Path, tmp_path: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    manifest = Manifest.load(synth_dir)
    reference = tmp_path / "ref.h5"
    build_frames(manifest, reference, CONFIG, workers=2)

    out = tmp_path / "frames.h5"
    finished = []

    def kill_after_four(n: int) -> None:
        finished.append(n)
        if sum(finished) == 4:
            raise _Killed

    with pytest.raises(_Killed):
        build_frames(manifest, out, CONFIG, workers=1, on_progress=kill_after_four)
    assert not out.exists() and out.with_name("frames.h5.tmp").exists()

    decoded: list[str] = []

    def counting_sample(path: str, **kwargs: object):  # type: ignore[no-untyped-def]
        decoded.append(Path(path).stem)
        return sample_video(path, **kwargs)

    monkeypatch.setattr(frames_stage, "sample_video", counting_sample)
    report = build_frames(manifest, out, CONFIG, workers=1)
    ids = list(manifest.videos["video_id"])
    assert decoded == ids[4:] and report.n_resumed == 4 and report.n_decoded_now == 6

    got, want = FramesReader(out), FramesReader(reference)
    assert got.digest == want.digest and got.video_ids == want.video_ids
    for a, b in zip(got.read(range(10)), want.read(range(10)), strict=True):
        np.testing.assert_array_equal(a, b)


def test_stale_or_corrupt_tmp_is_restarted(synth_dir: Path, tmp_path: Path) -> None:
    manifest = Manifest.load(synth_dir)
    out = tmp_path / "frames.h5"
    out.with_name("frames.h5.tmp").write_bytes(b"not an hdf5 file")
    first = build_frames(manifest, out, CONFIG, workers=1)
    assert first.n_resumed == 0
    with pytest.raises(_Killed):
        build_frames(manifest, out, FramesConfig(max_frames=3, size=16), workers=1,
                     on_progress=lambda n: (_ for _ in ()).throw(_Killed()))
    # different parameters -> the tmp file is not reused
    again = build_frames(manifest, out, CONFIG, workers=1)
    assert again.n_resumed == 0 and again.content_digest == first.content_digest


def test_reader_order_duplicates_pickle_and_load_all(synth_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "frames.h5"
    build_frames(Manifest.load(synth_dir), out, CONFIG, workers=1)
    reader = FramesReader(out)
    all_frames, all_mask = reader.read(list(range(len(reader))))
    rows = [5, 0, 5, 9, 2]
    frames, mask = reader.read(rows)
    np.testing.assert_array_equal(frames, all_frames[rows])
    np.testing.assert_array_equal(mask, all_mask[rows])
    clone = pickle.loads(pickle.dumps(reader))
    np.testing.assert_array_equal(clone.read([3])[0], all_frames[[3]])
    clone.load_all()
    np.testing.assert_array_equal(clone.read(rows)[0], frames)
    assert reader.read([])[0].shape == (0, 4, 16, 16, 3)
    with pytest.raises(IndexError):
        reader.read([10])
    assert reader.row_of(reader.video_ids[6]) == 6
    assert (reader.max_frames, reader.height, reader.width) == (4, 16, 16)


def test_cli_frames_splits_and_uniform(synth_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "test_frames.h5"
    result = CliRunner().invoke(main, ["frames", "--manifest", str(synth_dir), "--out", str(out),
                                       "--splits", "test", "--max-frames", "6", "--size", "16",
                                       "--policy", "uniform", "--workers", "1"])
    assert result.exit_code == 0, result.output
    reader = FramesReader(out)
    test_ids = pd.read_csv(synth_dir / "videos.csv").query("split == 'test'")["video_id"]
    assert reader.video_ids == list(test_ids)
    assert reader.attrs["sampling_policy"] == "uniform" and reader.attrs["splits"] == "test"
    _, mask = reader.read([0])
    assert mask.sum() == 6


def test_sigkill_mid_run_then_rerun_matches(synth_dir: Path, tmp_path: Path) -> None:
    """A real kill -9 of the CLI: the rerun resumes (or restarts) and equals a clean run."""
    import signal
    import subprocess
    import sys
    import time

    manifest = Manifest.load(synth_dir)
    paths = manifest.resolved_paths()
    videos = pd.DataFrame({"video_id": [f"v{i:03d}" for i in range(60)],
                           "path": [str(paths[i % len(paths)]) for i in range(60)],
                           "split": "train"})
    captions = pd.DataFrame({"caption_id": videos["video_id"] + "#0",
                             "video_id": videos["video_id"], "split": "train", "text": "x"})
    Manifest(videos, captions).save(tmp_path / "m")
    out = tmp_path / "frames.h5"
    argv = [sys.executable, "-m", "stages.cli", "frames", "--manifest", str(tmp_path / "m"),
            "--out", str(out), "--max-frames", "4", "--size", "16", "--workers", "1"]
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    tmp = out.with_name("frames.h5.tmp")
    deadline = time.monotonic() + 20
    while not tmp.exists() and time.monotonic() < deadline:
        time.sleep(0.02)
    time.sleep(0.4)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not out.exists()
    rerun = subprocess.run(argv, capture_output=True, text=True, check=True)
    assert "60/60 videos" in rerun.stdout, rerun.stdout
    reference = tmp_path / "ref.h5"
    build_frames(Manifest.load(tmp_path / "m"), reference, CONFIG, workers=2)
    assert FramesReader(out).digest == FramesReader(reference).digest
