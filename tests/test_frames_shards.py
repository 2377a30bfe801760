"""The frames stage over torchrun ranks: shards merged into the file one process writes."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest

from pipeline.data.frames_build import build_frames, frames_attrs
from pipeline.data.frames_shards import (
    chosen_ids,
    merge_shards,
    rank_manifest,
    shard_path,
    share_rows,
)
from pipeline.data.manifest import Manifest
from pipeline.errors import InputError
from tests.test_frames_stage import CONFIG, _with_bad_videos, synth_dir  # noqa: F401

REPO = Path(__file__).resolve().parents[1]


def _datasets(path: Path) -> dict[str, np.ndarray]:
    with h5py.File(path, "r") as handle:
        return {name: handle[name][()] for name in handle}


def _assert_same_file(got: Path, want: Path) -> None:
    a, b = _datasets(got), _datasets(want)
    assert sorted(a) == sorted(b)
    for name in b:
        assert np.array_equal(a[name], b[name]), name
    with h5py.File(got, "r") as g, h5py.File(want, "r") as w:
        assert dict(g.attrs) == dict(w.attrs)
    assert got.read_bytes() == want.read_bytes()


def _shards(manifest: Manifest, out: Path, world: int) -> None:
    """What each rank of ``world`` leaves beside ``out`` before rank 0 merges."""
    ids = chosen_ids(manifest, ("train", "val", "test"))
    for rank in range(world):
        mine = [ids[i] for i in share_rows(len(ids), rank, world)]
        build_frames(rank_manifest(manifest, mine), shard_path(out, rank, world), CONFIG,
                     workers=1, max_failed_fraction=1.0)


def test_three_shards_merge_to_the_one_process_file(synth_dir: Path,  # noqa: F811
                                                    tmp_path: Path) -> None:
    manifest = Manifest.load(_with_bad_videos(synth_dir, tmp_path))
    reference = tmp_path / "one" / "frames.h5"
    want = build_frames(manifest, reference, CONFIG, workers=2, max_failed_fraction=0.5)
    out = tmp_path / "three" / "frames.h5"
    _shards(manifest, out, 3)
    # (the per-output lock files stay beside them by design: pipeline/locks.py)
    assert sorted(p.name for p in out.parent.iterdir() if not p.name.endswith(".lock")) == [
        f"frames.shard-00{r}-of-003.h5" for r in range(3)]
    got = merge_shards(manifest, out, CONFIG, 3, max_failed_fraction=0.5)
    assert got.content_digest == want.content_digest and got.failures == want.failures
    _assert_same_file(out, reference)
    kept = [p.name for p in out.parent.iterdir() if not p.name.endswith(".lock")]
    assert kept == ["frames.h5"]  # shards removed


def test_merge_gate_and_missing_shard(synth_dir: Path, tmp_path: Path) -> None:  # noqa: F811
    manifest = Manifest.load(_with_bad_videos(synth_dir, tmp_path))
    out = tmp_path / "frames.h5"
    _shards(manifest, out, 2)
    with pytest.raises(InputError, match="3 of 10 videos failed"):
        merge_shards(manifest, out, CONFIG, 2, max_failed_fraction=0.2)
    assert not out.exists() and shard_path(out, 1, 2).exists()  # shards kept for a rerun
    shard_path(out, 1, 2).unlink()
    with pytest.raises(InputError, match=r"shard-001-of-002\.h5 is missing") as info:
        merge_shards(manifest, out, CONFIG, 2, max_failed_fraction=0.5)
    assert info.value.file == str(shard_path(out, 1, 2))


def test_rank_manifest_keeps_order_and_attrs_name_the_full_manifest(
        synth_dir: Path) -> None:  # noqa: F811
    manifest = Manifest.load(synth_dir)
    ids = chosen_ids(manifest, ("train", "test"))
    mine = [ids[i] for i in share_rows(len(ids), 1, 3)]
    sub = rank_manifest(manifest, mine)
    assert list(sub.videos["video_id"]) == mine == ids[1::3]
    assert set(sub.captions["video_id"]) <= set(mine)
    assert frames_attrs(CONFIG, sub.digest(), ["train"]) != frames_attrs(
        CONFIG, manifest.digest(), ["train"])
    assert share_rows(2, 2, 3) == range(2, 2, 3)  # more ranks than videos: an empty share


def test_two_torchrun_processes_equal_one(synth_dir: Path, tmp_path: Path) -> None:  # noqa: F811
    """The real CLI under torchrun --nproc_per_node=2 (gloo): byte-equal to 1 process."""
    manifest_dir = _with_bad_videos(synth_dir, tmp_path)
    args = ["frames", "--manifest", str(manifest_dir), "--max-frames", "4", "--size", "16",
            "--workers", "1", "--max-failed-fraction", "0.5"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    one = tmp_path / "one" / "frames.h5"
    proc = subprocess.run([sys.executable, "-m", "stages.cli", *args, "--out", str(one)],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    two = tmp_path / "two" / "frames.h5"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
           "-m", "stages.cli", *args, "--out", str(two)]
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "7/10 videos" in proc.stdout and "by 2 ranks" in proc.stdout
    assert proc.stdout.count("wrote ") == 1  # rank 0 reports for both
    _assert_same_file(two, one)
    assert [p.name for p in two.parent.iterdir() if not p.name.endswith(".lock")] == [
        "frames.h5"]
