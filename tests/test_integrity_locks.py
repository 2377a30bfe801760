"""One run per output: a second run on the same output stops with an ``Error:`` and touches
nothing, with HDF5's own file locking on and off; a tmp is deleted only when it is unreadable.

What would break: two runs writing into one ``frames.h5.tmp`` (HDF5_USE_FILE_LOCKING=FALSE),
a run deleting a colleague's live tmp because HDF5 refused to open a locked file, a stage that
does not take the lock, a lock file left beside a finished output.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from pipeline.atomic import tmp_path_for
from pipeline.cache.schema import CacheMeta
from pipeline.cache.writer import TeacherCacheWriter
from pipeline.data.frames_build import FramesConfig, build_frames
from pipeline.data.frames_store import FramesReader
from pipeline.data.frames_verify import verify_frames
from pipeline.data.frames_writer import FramesWriter
from pipeline.data.manifest import Manifest
from pipeline.data.synth import SynthParams, render_dataset
from pipeline.errors import OutputLockedError
from pipeline.locks import acquire_tmp_lock, lock_path_for_tmp
from stages.cli import main
from tests.integrity_fixtures import python_env, run_cli
from tests.student_fixtures import make_frames, make_manifest

SYNTH = SynthParams(seed=7, n_train=6, n_val=2, n_test=2, fps=5, min_duration=4.0,
                    max_duration=4.0, resolution=32, max_segments=1, min_segment_s=1.0,
                    max_segment_s=2.0)
CONFIG = FramesConfig(max_frames=4, size=16)

#: Run A: decode, stop after the first video until told to go on (a long run, made short).
SLOW_RUN = """
import sys, time
from pathlib import Path
from pipeline.data.frames_build import FramesConfig, build_frames
from pipeline.data.manifest import Manifest
manifest_dir, out, ready, go = sys.argv[1:5]
seen = [0]
def progress(n):
    seen[0] += n
    if seen[0] == 1:
        Path(ready).write_text("ready")
        deadline = time.time() + 60
        while not Path(go).exists() and time.time() < deadline:
            time.sleep(0.05)
report = build_frames(Manifest.load(manifest_dir), out, FramesConfig(max_frames=4, size=16),
                      workers=1, on_progress=progress)
print(report.n_resumed, report.content_digest)
"""

#: Hold an HDF5 file open for writing (HDF5's lock, not ours) until told to stop.
HOLD_OPEN = """
import sys, time
from pathlib import Path
import h5py
path, ready, go = sys.argv[1:4]
with h5py.File(path, "r+"):
    Path(ready).write_text("ready")
    deadline = time.time() + 60
    while not Path(go).exists() and time.time() < deadline:
        time.sleep(0.05)
"""

#: Open a writer on an existing tmp and report what happened.
OPEN_WRITER = """
import sys
import numpy as np
from pipeline.errors import OutputLockedError
kind, tmp = sys.argv[1:3]
try:
    if kind == "frames":
        from pipeline.data.frames_writer import FramesWriter
        FramesWriter.open(tmp, ["a", "b"], max_frames=2, size=4, attrs={"x": 1}).close()
    else:
        from pipeline.cache.schema import CacheMeta
        from pipeline.cache.writer import TeacherCacheWriter
        meta = CacheMeta(teacher_kind="xclip", checkpoint_sha256="0", frames_digest="f",
                         manifest_digest="m", max_words=8, max_frames=2, logit_scale=1.0)
        TeacherCacheWriter(tmp[:-4], caption_ids=["c0", "c1"], video_ids=["v0"],
                           caption_video=[0, 0], meta=meta, block_rows=1).close()
    print("OPENED")
except OutputLockedError as exc:
    print("LOCKED", exc)
"""


@pytest.fixture(scope="module")
def synth(tmp_path_factory: pytest.TempPathFactory) -> dict:
    root = tmp_path_factory.mktemp("locks")
    render_dataset(root / "data", SYNTH, workers=2)
    reference = root / "reference.h5"
    build_frames(Manifest.load(root / "data"), reference, CONFIG, workers=1)
    return {"root": root, "manifest": root / "data", "digest": FramesReader(reference).digest}


def _wait_for(path: Path, proc: subprocess.Popen, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        if proc.poll() is not None:
            raise AssertionError(f"helper exited early: {proc.communicate()}")
        assert time.monotonic() < deadline, f"{path} never appeared"
        time.sleep(0.05)


def _script(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


@pytest.mark.parametrize("hdf5_locking", ["TRUE", "FALSE"])
def test_second_frames_run_on_one_output_is_refused(synth: dict, tmp_path: Path,
                                                     hdf5_locking: str) -> None:
    env = {"HDF5_USE_FILE_LOCKING": hdf5_locking}
    out, ready, go = tmp_path / "frames.h5", tmp_path / "ready", tmp_path / "go"
    first = subprocess.Popen(
        [sys.executable, str(_script(tmp_path, "slow.py", SLOW_RUN)), str(synth["manifest"]),
         str(out), str(ready), str(go)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True, env=python_env(env))
    try:
        _wait_for(ready, first)
        tmp = tmp_path_for(out)
        before = tmp.stat().st_size
        second = run_cli(["frames", "--manifest", str(synth["manifest"]), "--out", str(out),
                          "--max-frames", "4", "--size", "16", "--workers", "1"], env=env)
        assert second.returncode == 1, second.stderr[-2000:]
        error = [ln for ln in second.stderr.splitlines() if ln.startswith("Error:")]
        assert len(error) == 1 and "another run is writing this output" in error[0]
        assert str(lock_path_for_tmp(tmp)) in error[0] and "pid" in error[0]
        assert tmp.exists() and tmp.stat().st_size == before  # untouched
    finally:
        go.write_text("go")
        stdout, stderr = first.communicate(timeout=120)
    assert first.returncode == 0, stderr[-2000:]
    assert stdout.split() == ["0", synth["digest"]]  # the first run was not disturbed
    assert verify_frames(out) == [] and not tmp.exists()
    acquire_tmp_lock(tmp).release()  # the lock went with its process (its file may stay)


@pytest.mark.parametrize("kind", ["frames", "cache"])
def test_tmp_locked_by_hdf5_is_not_deleted(tmp_path: Path, kind: str) -> None:
    """A tmp another process holds open (HDF5's lock, e.g. an older teachclip or an h5py
    session) is live work: the writer refuses it instead of taking it for a broken file."""
    if kind == "frames":
        tmp = tmp_path / "frames.h5.tmp"
        FramesWriter.open(tmp, ["a", "b"], max_frames=2, size=4, attrs={"x": 1}).close()
    else:
        tmp = tmp_path / "cache.h5.tmp"
        meta = CacheMeta(teacher_kind="xclip", checkpoint_sha256="0", frames_digest="f",
                         manifest_digest="m", max_words=8, max_frames=2, logit_scale=1.0)
        writer = TeacherCacheWriter(tmp_path / "cache.h5", caption_ids=["c0", "c1"],
                                    video_ids=["v0"], caption_video=[0, 0], meta=meta,
                                    block_rows=1)
        writer.write_block(0, np.zeros((1, 1)), np.zeros((1, 2)), np.ones((1, 2), bool))
        writer.close()
    content = tmp.read_bytes()
    env = python_env({"HDF5_USE_FILE_LOCKING": "TRUE"})
    ready, go = tmp_path / "ready", tmp_path / "go"
    holder = subprocess.Popen([sys.executable, str(_script(tmp_path, "hold.py", HOLD_OPEN)),
                               str(tmp), str(ready), str(go)], env=env, text=True,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        _wait_for(ready, holder)
        opened = subprocess.run([sys.executable, str(_script(tmp_path, "o.py", OPEN_WRITER)),
                                 kind, str(tmp)], env=env, capture_output=True, text=True,
                                timeout=60)
    finally:
        go.write_text("go")
        holder.communicate(timeout=60)
    assert opened.stdout.startswith("LOCKED"), (opened.stdout, opened.stderr[-2000:])
    assert "open in another process" in opened.stdout and "left untouched" in opened.stdout
    assert tmp.exists() and tmp.read_bytes() == content


def test_unreadable_tmp_is_restarted_and_said_so(synth: dict, tmp_path: Path) -> None:
    out = tmp_path / "frames.h5"
    tmp_path_for(out).write_bytes(b"\x89HDF\r\n\x1a\n" + bytes(200))  # truncated at the header
    result = CliRunner().invoke(main, ["frames", "--manifest", str(synth["manifest"]), "--out",
                                       str(out), "--max-frames", "4", "--size", "16",
                                       "--workers", "1"])
    assert result.exit_code == 0, result.output
    assert "note: restarted" in result.output and "unreadable" in result.output
    assert FramesReader(out).digest == synth["digest"]


def test_in_process_second_writer_is_refused(tmp_path: Path) -> None:
    first = FramesWriter.open(tmp_path / "f.h5.tmp", ["a"], max_frames=1, size=2, attrs={})
    with pytest.raises(OutputLockedError, match="another run is writing this output"):
        FramesWriter.open(tmp_path / "f.h5.tmp", ["a"], max_frames=1, size=2, attrs={})
    first.close()
    FramesWriter.open(tmp_path / "f.h5.tmp", ["a"], max_frames=1, size=2, attrs={}).close()


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> dict:
    root = tmp_path_factory.mktemp("train")
    manifest = make_manifest(root)
    make_frames(root / "frames.h5", list(manifest.videos["video_id"]))
    return {"root": root}


@pytest.mark.parametrize("command", [
    ["student", "train"],
    ["teacher", "train", "--name", "x", "--kind", "xclip", "--options",
     '{"temporal_layers": 1}'],
])
def test_training_stage_refuses_an_output_in_use(world: dict, tmp_path: Path,
                                                 command: list[str]) -> None:
    out = tmp_path / "run"
    args = [*command, "--out", str(out), "--frames", str(world["root"] / "frames.h5"),
            "--manifest", str(world["root"] / "manifest"), "--device", "cpu",
            "--batch-size", "8", "--epochs", "1", "--eval-split", ""]
    held = acquire_tmp_lock(tmp_path_for(out))  # another run's lock (flock: per open file)
    try:
        result = CliRunner().invoke(main, args)
    finally:
        held.release()
    assert result.exit_code == 1 and "another run is writing this output" in result.output
    assert not out.exists()
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    assert (out / "model.pt").exists() and sorted(p.name for p in out.iterdir()) == [
        "model.pt", "summary.json", "train_log.tsv", "val_log.tsv"]  # no lock in the output
    acquire_tmp_lock(tmp_path_for(out)).release()  # released at the end of the run
