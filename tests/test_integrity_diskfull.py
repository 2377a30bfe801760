"""A full disk ends in one ``Error:`` naming the file and saying the tmp was kept, never a
segfault; the kept tmp resumes to exactly the file a run on an empty disk writes.

Simulated ENOSPC (always run): HDF5's flush failing the way h5py reports it, a compaction that
fails, the free-space check, a reserve that cannot be allocated. Real ENOSPC (run where a tmpfs
can be mounted, e.g. CI as root): the CLI in a fresh interpreter on a tiny tmpfs, once stopped
by the free-space check and once with that check disabled so HDF5 itself hits the full disk
(the case that segfaulted with exit 139), mid-decoding and during the final compaction.
"""

from __future__ import annotations

import errno
import os
import re
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest
from click.testing import CliRunner

import pipeline.data.frames_writer as frames_writer
import pipeline.diskguard as diskguard
from pipeline.atomic import tmp_path_for
from pipeline.cache.schema import CacheMeta
from pipeline.cache.writer import TeacherCacheWriter
from pipeline.data.frames_build import FramesConfig, build_frames
from pipeline.data.frames_store import FramesReader
from pipeline.data.frames_verify import verify_frames
from pipeline.data.manifest import Manifest
from pipeline.data.synth import SynthParams, render_dataset
from pipeline.errors import WriteFailedError
from stages.cli import main
from tests.integrity_fixtures import can_mount, python_env, resize_tmpfs, run_cli, tmpfs

SYNTH = SynthParams(seed=5, n_train=6, n_val=2, n_test=2, fps=5, min_duration=4.0,
                    max_duration=4.0, resolution=32, max_segments=1, min_segment_s=1.0,
                    max_segment_s=2.0)
CONFIG = FramesConfig(max_frames=4, size=16, compression="lzf")
ENOSPC_TEXT = ("Unable to synchronously flush file (file write failed: time = now, filename = "
               "'x', file descriptor = 3, errno = 28, error message = 'No space left on device')")


@pytest.fixture(scope="module")
def synth(tmp_path_factory: pytest.TempPathFactory) -> dict:
    root = tmp_path_factory.mktemp("diskfull")
    render_dataset(root / "data", SYNTH, workers=2)
    manifest = Manifest.load(root / "data")
    reference = root / "reference.h5"
    build_frames(manifest, reference, CONFIG, workers=1)
    big = root / "big.h5"  # what the real-disk runs must end up with
    build_frames(manifest, big, FramesConfig(max_frames=6, size=224, compression="none"),
                 workers=1)
    return {"root": root, "manifest": manifest, "reference": FramesReader(reference),
            "big": FramesReader(big)}


def _fail_flush_at(monkeypatch: pytest.MonkeyPatch, call: int) -> None:
    """Make the ``call``-th flush of a ``*.tmp`` HDF5 file fail like a full disk."""
    real = h5py.File.flush
    seen = {"n": 0}

    def flush(self: h5py.File) -> None:
        if str(self.filename).endswith(".tmp"):
            seen["n"] += 1
            if seen["n"] == call:
                raise RuntimeError(ENOSPC_TEXT)
        real(self)

    monkeypatch.setattr(h5py.File, "flush", flush)


def _leftovers(out: Path) -> list[str]:
    """Files beside ``out`` other than the final file, its tmp and its lock file (a reserve or a
    partial compaction would be left-overs)."""
    mine = (out.name, f"{out.name}.tmp", f"{out.name}.tmp.lock")
    return sorted(p.name for p in out.parent.iterdir()
                  if p.name.startswith(out.name) and p.name not in mine)


# ------------------------------------------------------------------------------ simulated
def test_frames_write_fails_keeps_tmp_and_resumes_exactly(synth: dict, tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    out = tmp_path / "frames.h5"
    _fail_flush_at(monkeypatch, 1 + 2 * 3 + 1)  # create, then 2 per video: the 4th video's data
    with pytest.raises(WriteFailedError) as exc:
        build_frames(synth["manifest"], out, CONFIG, workers=1)
    message = str(exc.value)
    assert exc.value.kept and message.startswith(f"{out}.tmp: no space left on device (ENOSPC)")
    assert "kept with 3 of 10 videos done" in message and "rerun" in message
    assert not out.exists() and tmp_path_for(out).exists() and _leftovers(out) == []
    monkeypatch.undo()
    report = build_frames(synth["manifest"], out, CONFIG, workers=1)
    assert report.n_resumed == 3 and report.n_decoded_now == 7
    assert report.content_digest == synth["reference"].digest and verify_frames(out) == []


def test_frames_final_compaction_fails_keeps_complete_tmp(synth: dict, tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    out = tmp_path / "frames.h5"

    def full(*args: object, **kwargs: object) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(frames_writer.FramesWriter, "_write_final", full)
    with pytest.raises(WriteFailedError, match="while writing the final file.*kept with all 10"):
        build_frames(synth["manifest"], out, CONFIG, workers=1)
    assert not out.exists() and _leftovers(out) == []  # the partial .compact is gone
    monkeypatch.undo()
    report = build_frames(synth["manifest"], out, CONFIG, workers=1)
    assert (report.n_resumed, report.n_decoded_now) == (10, 0)
    assert report.content_digest == synth["reference"].digest


def test_free_space_check_stops_before_writing(synth: dict, tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    out = tmp_path / "frames.h5"
    monkeypatch.setattr(diskguard, "free_bytes", lambda directory: 1000)
    result = CliRunner().invoke(main, ["frames", "--manifest", str(synth["manifest"].root),
                                       "--out", str(out), "--max-frames", "4", "--size", "16",
                                       "--workers", "1"])
    assert result.exit_code == 1 and "Traceback" not in result.output
    line = [ln for ln in result.output.splitlines() if ln.startswith("Error:")][0]
    assert f"{out}.tmp" in line and "no space left on device for video" in line
    assert "tmp file is kept" in line
    with h5py.File(tmp_path_for(out), "r") as handle:
        assert not handle["done"][:].any()  # nothing half-written


def test_reserve_that_does_not_fit_fails_at_start(synth: dict, tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    out = tmp_path / "frames.h5"

    def no_room(fd: int, offset: int, length: int) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "posix_fallocate", no_room)
    with pytest.raises(WriteFailedError, match="not enough free space to start"):
        build_frames(synth["manifest"], out, CONFIG, workers=1)
    assert [p.name for p in tmp_path.iterdir()] == ["frames.h5.tmp.lock"]  # no tmp, no reserve


def test_cache_block_write_fails_keeps_tmp_and_resumes_bit_equal(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    rng = np.random.default_rng(0)
    n_c, n_v, n_f = 20, 7, 3
    sim = rng.normal(size=(n_c, n_v)).astype(np.float32)
    rel = rng.normal(size=(n_c, n_f)).astype(np.float32)
    mask = np.ones((n_c, n_f), bool)
    meta = CacheMeta(teacher_kind="xclip", checkpoint_sha256="0" * 64, frames_digest="f",
                     manifest_digest="m", max_words=32, max_frames=n_f, logit_scale=100.0)

    def writer(path: Path) -> TeacherCacheWriter:
        return TeacherCacheWriter(path, caption_ids=[f"c{i}" for i in range(n_c)],
                                  video_ids=[f"v{i}" for i in range(n_v)],
                                  caption_video=np.arange(n_c) % n_v, meta=meta, block_rows=4)

    def fill(w: TeacherCacheWriter) -> Path:
        for b in w.pending_blocks():
            s, e = w.block_range(b)
            w.write_block(b, sim[s:e], rel[s:e], mask[s:e])
        return w.finalize()

    reference = fill(writer(tmp_path / "ref.h5"))
    path = tmp_path / "cache.h5"
    _fail_flush_at(monkeypatch, 1 + 2 * 2 + 1)  # block 2's data
    with pytest.raises(WriteFailedError, match="ENOSPC.*block 2.*kept"):
        fill(writer(path))
    monkeypatch.undo()
    resumed = writer(path)
    assert resumed.pending_blocks() == [2, 3, 4]
    fill(resumed)
    with h5py.File(reference) as a, h5py.File(path) as b:
        for name in ("sim", "relevance", "frame_mask", "block_digests", "rows_done"):
            np.testing.assert_array_equal(a[name][:], b[name][:], err_msg=name)
        assert a.attrs["content_digest"] == b.attrs["content_digest"]


# ------------------------------------------------------------------------------ real tmpfs
HELPER = """
import sys
import pipeline.diskguard as dg
dg.DiskGuard.check_space = lambda self, need, doing: None  # let HDF5 itself hit the full disk
dg.RESERVE_BYTES = 2 << 20
from stages.cli import main
sys.argv = ["teachclip", *sys.argv[1:]]
main()
"""
BIG = ["--max-frames", "6", "--size", "224", "--compression", "none", "--workers", "1"]


@pytest.mark.skipif(not can_mount(), reason="needs permission to mount a tmpfs")
@pytest.mark.parametrize("case", ["checked", "hdf5-decoding", "hdf5-compaction"])
def test_real_full_tmpfs(synth: dict, tmp_path: Path, case: str) -> None:
    """10 videos × 6 × 224² × 3 B ≈ 9 MB of frames, a final file as big again."""
    import subprocess

    size = {"checked": "20m", "hdf5-decoding": "6m", "hdf5-compaction": "14m"}[case]
    with tmpfs(tmp_path / "disk", size) as disk:
        out = disk / "frames.h5"
        args = ["frames", "--manifest", str(synth["manifest"].root), "--out", str(out), *BIG]
        if case == "checked":
            first = run_cli(args)
        else:
            (tmp_path / "helper.py").write_text(HELPER, encoding="utf-8")
            first = subprocess.run([sys.executable, str(tmp_path / "helper.py"), *args],
                                   capture_output=True, text=True, env=python_env(),
                                   timeout=120)
        assert first.returncode == 1, (first.returncode, first.stderr[-2000:])
        error = [ln for ln in first.stderr.splitlines() if ln.startswith("Error:")]
        assert len(error) == 1 and "no space left on device" in error[0], first.stderr[-2000:]
        assert "Traceback" not in first.stderr and "tmp file is kept" in error[0]
        if case == "hdf5-compaction":
            assert "while writing the final file" in error[0]
        assert sorted(p.name for p in disk.iterdir()) == ["frames.h5.tmp", "frames.h5.tmp.lock"]
        resize_tmpfs(disk, "48m")  # "free space"
        second = run_cli(args)
        assert second.returncode == 0, second.stderr[-2000:]
        resumed = int(re.search(r"\((\d+) resumed", second.stdout).group(1))  # type: ignore
        assert resumed > 0 and verify_frames(out) == []
        assert FramesReader(out).digest == synth["big"].digest
