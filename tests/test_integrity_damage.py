"""Damaged shared files are found, named and refused: flipped bytes in a real teacher cache and in
real frames files (uncompressed and lzf), values rewritten behind the checksums' back, NaN, and
files from before checksums (schema version 1).

What would break: a flipped byte passing ``cache verify`` / ``frames verify``, a student training
on damaged soft labels, h5py's raw "filter returned failure" instead of an ``Error:`` naming the
file, dataset and caption/video, or old files becoming unreadable.
"""

from __future__ import annotations

import shutil
import warnings
from pathlib import Path

import h5py
import numpy as np
import pytest
from click.testing import CliRunner

from pipeline.cache.reader import TeacherCache
from pipeline.cache.schema import CacheIntegrityError
from pipeline.cache.verify import verify
from pipeline.data.frames_build import FramesConfig, build_frames
from pipeline.data.frames_store import FramesReader
from pipeline.data.frames_verify import verify_frames
from pipeline.data.manifest import Manifest
from pipeline.data.synth import SynthParams, render_dataset
from pipeline.errors import DataIntegrityError, UncheckedFileWarning
from stages.cli import main
from tests.integrity_fixtures import flip_byte
from tests.student_fixtures import make_cache, make_frames, make_manifest

SYNTH = SynthParams(seed=3, n_train=5, n_val=0, n_test=1, fps=5, min_duration=4.0,
                    max_duration=4.0, resolution=32, max_segments=1, min_segment_s=1.0,
                    max_segment_s=2.0)


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """A manifest, random frames.h5 and a finished cache (16 captions, 4 blocks of 4 rows)."""
    root = tmp_path_factory.mktemp("damage")
    manifest = make_manifest(root)
    frames = make_frames(root / "frames.h5", list(manifest.videos["video_id"]))
    cache = make_cache(root / "cache.h5", manifest, frames)
    return {"root": root, "manifest": manifest, "frames": frames, "cache": cache}


@pytest.fixture(scope="module")
def synth(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """Real encoded videos, decoded into frames.h5 uncompressed and with lzf."""
    root = tmp_path_factory.mktemp("synth")
    render_dataset(root / "data", SYNTH, workers=2)
    manifest = Manifest.load(root / "data")
    files = {}
    for compression in ("none", "lzf"):
        files[compression] = root / f"frames_{compression}.h5"
        build_frames(manifest, files[compression],
                     FramesConfig(max_frames=4, size=32, compression=compression), workers=1)
    return {"root": root, "manifest": root / "data", "files": files}


def _copy(src: Path, tmp_path: Path, name: str = "copy.h5") -> Path:
    dst = tmp_path / name
    shutil.copyfile(src, dst)
    return dst


def _student_args(world: dict, out: Path, cache: Path) -> list[str]:
    return ["student", "train", "--out", str(out), "--frames", str(world["root"] / "frames.h5"),
            "--manifest", str(world["root"] / "manifest"), "--cache", str(cache),
            "--device", "cpu", "--batch-size", "8", "--epochs", "1", "--eval-split", ""]


# ------------------------------------------------------------------------------ teacher cache
def test_flipped_byte_in_sim_fails_verify_reads_and_training(world: dict, tmp_path: Path) -> None:
    cache_path = _copy(world["cache"], tmp_path)
    flip_byte(cache_path, "sim", 5)  # the chunk of rows 4..7 = block 1

    problems = verify(cache_path)
    assert len(problems) == 1 and "sim in block 1" in problems[0] and "checksum" in problems[0]
    result = CliRunner().invoke(main, ["cache", "verify", str(cache_path)])
    assert result.exit_code == 1 and "Error:" in result.output and "block 1" in result.output

    cache = TeacherCache(cache_path)
    with pytest.raises(CacheIntegrityError) as exc:
        cache.batch([5, 0], [0, 1])
    message = str(exc.value)
    assert str(cache_path) in message and "'sim'" in message and "v02_c1" in message
    np.testing.assert_array_equal(  # the damage stays local: other chunks read fine
        cache.batch([0, 12], [1])[0], TeacherCache(world["cache"]).batch([0, 12], [1])[0])

    out = tmp_path / "student"
    result = CliRunner().invoke(main, _student_args(world, out, cache_path))
    assert result.exit_code == 1, result.output
    assert f"Error: {cache_path}" in result.output and "checksum" in result.output
    assert "Traceback" not in result.output
    assert not out.exists() and not Path(f"{out}.tmp").exists()  # refused before training


@pytest.mark.parametrize("dataset, row, expected", [
    ("relevance", 0, "per-caption datasets are damaged"),
    ("block_digests", 1, "block_digests cannot be read"),
])
def test_flipped_byte_in_other_cache_datasets(world: dict, tmp_path: Path, dataset: str,
                                              row: int, expected: str) -> None:
    cache_path = _copy(world["cache"], tmp_path)
    flip_byte(cache_path, dataset, row)
    problems = verify(cache_path)
    assert problems and any(dataset in p or "relevance/frame_mask" in p for p in problems)
    if dataset == "relevance":
        with pytest.raises(CacheIntegrityError, match=expected):
            TeacherCache(cache_path)
    else:
        with pytest.raises(CacheIntegrityError, match=expected):
            TeacherCache(cache_path).check_data()


def test_value_rewritten_through_h5py_fails_the_digest(world: dict, tmp_path: Path) -> None:
    """A rewrite recomputes HDF5's chunk checksum; the block digest still sees it."""
    cache_path = _copy(world["cache"], tmp_path)
    with h5py.File(cache_path, "a") as handle:
        handle["sim"][6, 2] = handle["sim"][6, 2] + np.float16(1.0)
    problems = verify(cache_path)
    assert problems == [p for p in problems if "differs from the digest" in p]
    assert len(problems) == 1 and "sim in block 1" in problems[0]
    result = CliRunner().invoke(main, _student_args(world, tmp_path / "s", cache_path))
    assert result.exit_code == 1 and "differs from the digest" in result.output


def test_nan_is_refused_before_the_first_step(world: dict, tmp_path: Path) -> None:
    cache_path = _copy(world["cache"], tmp_path)
    with h5py.File(cache_path, "a") as handle:
        handle["sim"][10, 3] = np.nan
        captions = list(handle["caption_ids"].asstr()[:])
    out = tmp_path / "student"
    result = CliRunner().invoke(main, _student_args(world, out, cache_path))
    assert result.exit_code == 1, result.output
    line = [ln for ln in result.output.splitlines() if ln.startswith("Error:")][0]
    assert str(cache_path) in line and "first row 10" in line and captions[10] in line
    assert not Path(f"{out}.tmp").exists()  # no step was taken
    with pytest.raises(CacheIntegrityError, match=f"caption '{captions[10]}'"):
        TeacherCache(cache_path).batch([10], [3])  # the per-batch backstop


def test_changed_small_dataset_fails_the_content_digest(world: dict, tmp_path: Path) -> None:
    cache_path = _copy(world["cache"], tmp_path)
    with h5py.File(cache_path, "a") as handle:
        cv = handle["caption_video"][:]
        handle["caption_video"][0] = (cv[0] + 1) % handle["video_ids"].shape[0]
    assert any("content_digest" in p for p in verify(cache_path))


def test_version_1_cache_stays_readable_but_cannot_be_verified(world: dict,
                                                               tmp_path: Path) -> None:
    cache_path = _copy(world["cache"], tmp_path)
    with h5py.File(cache_path, "a") as handle:
        handle.attrs["schema_version"] = 1
        del handle["block_digests"]
    with pytest.warns(UncheckedFileWarning, match="rescore"):
        cache = TeacherCache(cache_path)
    assert cache.batch([1], [1])[0].shape == (1, 1)
    cache.close()
    problems = verify(cache_path)
    assert len(problems) == 1 and "schema version 1" in problems[0]
    with h5py.File(cache_path, "a") as handle:
        handle.attrs["schema_version"] = 7
    with pytest.raises(Exception, match="'1 or 2' in what this teachclip reads, 7 in the file; "
                       "it was written by a newer teachclip"):
        TeacherCache(cache_path)


# ------------------------------------------------------------------------------ frames.h5
@pytest.mark.parametrize("compression", ["none", "lzf"])
def test_flipped_byte_in_frames_is_named(synth: dict, tmp_path: Path, compression: str) -> None:
    path = _copy(synth["files"][compression], tmp_path, "frames.h5")
    reader = FramesReader(path)
    victim = reader.video_ids[2]  # a train video: training reads it in its first epoch
    assert verify_frames(path) == []
    flip_byte(path, "frames", 2)

    problems = verify_frames(path)
    assert len(problems) == 1 and f"'{victim}' (row 2" in problems[0]
    result = CliRunner().invoke(main, ["frames", "verify", str(path)])
    assert result.exit_code == 1 and victim in result.output

    with pytest.raises(DataIntegrityError) as exc:
        FramesReader(path).read([0, 2])
    assert str(path) in str(exc.value) and "'frames'" in str(exc.value)
    assert f"video '{victim}'" in str(exc.value)
    assert FramesReader(path).read([0, 1])[0].shape == (2, 4, 32, 32, 3)

    # the same error through a DataLoader worker process, as one clean line
    result = CliRunner().invoke(main, [
        "student", "train", "--out", str(tmp_path / "s"), "--frames", str(path),
        "--manifest", str(synth["manifest"]), "--device", "cpu", "--batch-size", "5",
        "--epochs", "1", "--eval-split", "", "--workers", "1", "--max-words", "16"])
    assert result.exit_code == 1, result.output
    errors = [ln for ln in result.output.splitlines() if ln.startswith("Error:")]
    assert len(errors) == 1 and victim in errors[0] and "Traceback" not in result.output


def test_frames_rewritten_through_h5py_fail_their_digest(synth: dict, tmp_path: Path) -> None:
    path = _copy(synth["files"]["lzf"], tmp_path, "frames.h5")
    with h5py.File(path, "a") as handle:
        handle["frames"][4, 0, 0, 0, 0] ^= 1
        victim = handle["video_ids"].asstr()[4]
    problems = verify_frames(path)
    assert len(problems) == 1 and "differ from the digest stored" in problems[0]
    assert f"'{victim}' (row 4)" in problems[0]


def test_version_1_frames_readable_and_whole_file_digest_checked(synth: dict,
                                                                tmp_path: Path) -> None:
    path = _copy(synth["files"]["none"], tmp_path, "frames.h5")
    with h5py.File(path, "a") as handle:
        handle.attrs["schema_version"] = 1
        del handle["row_sha256"]
    with pytest.warns(UncheckedFileWarning):
        reader = FramesReader(path)
    assert reader.read([1])[0].shape == (1, 4, 32, 32, 3)
    reader.close()
    problems = verify_frames(path)
    assert len(problems) == 1 and "schema version 1" in problems[0]  # data itself intact
    with h5py.File(path, "a") as handle:
        handle["frames"][1, 0, 0, 0, 0] ^= 1
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UncheckedFileWarning)
        problems = verify_frames(path)
    assert any("content_digest differs" in p for p in problems)


def test_flipped_byte_in_an_embeddings_index(tmp_path: Path) -> None:
    from pipeline.retrieval.index import read_index, write_index

    path = tmp_path / "embeddings.h5"
    rng = np.random.default_rng(0)
    write_index(path, [f"v{i}" for i in range(50)], rng.normal(size=(50, 16)), attrs={})
    assert read_index(path).embeddings.shape == (50, 16)
    flip_byte(path, "video_emb", 0)
    with pytest.raises(DataIntegrityError, match="dataset 'video_emb' is damaged.*rebuild"):
        read_index(path)
