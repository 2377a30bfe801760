"""Teacher cache: write/resume/shard+merge/read/verify and the ``teachclip cache`` CLI."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
from click.testing import CliRunner

from pipeline.atomic import tmp_path_for
from pipeline.cache.merge import merge_shards
from pipeline.cache.reader import TeacherCache
from pipeline.cache.schema import CacheIntegrityError, CacheMeta, chunk_shape, shard_path
from pipeline.cache.verify import info, verify
from pipeline.cache.writer import TeacherCacheWriter
from pipeline.data.manifest import Manifest
from pipeline.errors import InputError, MismatchError
from pipeline.models.teachers.base import masked_softmax
from stages.cli import main

N_C, N_V, N_F = 23, 9, 6
BLOCK = 5


@pytest.fixture(scope="module")
def data() -> dict:
    rng = np.random.default_rng(0)
    mask = rng.random((N_C, N_F)) > 0.3
    mask[:, 0] = True
    return {
        "caption_ids": [f"cap{i}" for i in range(N_C)],
        "video_ids": [f"vid{i}" for i in range(N_V)],
        "caption_video": rng.integers(0, N_V, N_C),
        "sim": (rng.normal(size=(N_C, N_V)) * 20).astype(np.float32),
        "rel": rng.normal(size=(N_C, N_F)).astype(np.float32),
        "mask": mask,
    }


def _meta(**overrides) -> CacheMeta:
    base = dict(teacher_kind="xclip", checkpoint_sha256="0" * 64, frames_digest="frames-d",
                manifest_digest="manifest-d", max_words=32, max_frames=N_F, logit_scale=100.0,
                teacher_config={"layers": 2})
    base.update(overrides)
    return CacheMeta(**base)


def _writer(path: Path, data: dict, **kwargs) -> TeacherCacheWriter:
    kwargs.setdefault("meta", _meta())
    kwargs.setdefault("block_rows", BLOCK)
    return TeacherCacheWriter(path, caption_ids=data["caption_ids"], video_ids=data["video_ids"],
                              caption_video=data["caption_video"], **kwargs)


def _fill(writer: TeacherCacheWriter, data: dict, blocks=None) -> None:
    for b in writer.pending_blocks() if blocks is None else blocks:
        s, e = writer.block_range(b)
        writer.write_block(b, data["sim"][s:e], data["rel"][s:e], data["mask"][s:e])


def _write_full(path: Path, data: dict, **kwargs) -> Path:
    writer = _writer(path, data, **kwargs)
    _fill(writer, data)
    return writer.finalize()


def _arrays(path: Path) -> dict[str, np.ndarray]:
    with h5py.File(path, "r") as f:
        return {name: f[name][:] for name in ("caption_ids", "video_ids", "caption_video", "sim",
                                               "relevance", "frame_mask", "rows_done")}


def test_write_read_roundtrip(tmp_path: Path, data: dict) -> None:
    path = _write_full(tmp_path / "t.h5", data)
    assert path.exists() and not tmp_path_for(path).exists()
    cache = TeacherCache(path)
    assert cache.caption_ids == data["caption_ids"] and cache.video_ids == data["video_ids"]
    assert cache.F == N_F and cache.L == 32 and cache.meta == _meta()
    np.testing.assert_array_equal(cache.caption_video, data["caption_video"])
    cache.load_all()
    np.testing.assert_array_equal(cache._sim_ram, data["sim"].astype(np.float16))
    with h5py.File(path, "r") as f:
        assert f["sim"].dtype == np.float16 and f["sim"].chunks[1] == N_V
        assert BLOCK % f["sim"].chunks[0] == 0
        assert f.attrs["schema"] == "teachclip.teacher_cache" and f.attrs["schema_version"] == 2
        assert f["sim"].fletcher32 and f["relevance"].fletcher32 and f["frame_mask"].fletcher32
    # masked-out relevance stored as 0, masked-in as given
    stored = _arrays(path)["relevance"]
    np.testing.assert_array_equal(stored, np.where(data["mask"], data["rel"], 0))


@pytest.mark.parametrize("load_all", [False, True])
def test_batch_unsorted_duplicates(tmp_path: Path, data: dict, load_all: bool) -> None:
    path = _write_full(tmp_path / "t.h5", data)
    cache = TeacherCache(path, load_all=load_all)
    rows = np.array([17, 3, 3, 22, 0, 17])
    cols = np.array([8, 2, 2, 0])
    sim, rel, mask = cache.batch(rows, cols)
    full = data["sim"].astype(np.float16).astype(np.float32)
    assert sim.dtype == np.float32 and sim.shape == (6, 4)
    np.testing.assert_array_equal(sim, full[rows][:, cols])
    np.testing.assert_array_equal(mask, data["mask"][rows])
    np.testing.assert_array_equal(rel, np.where(data["mask"], data["rel"], 0)[rows])
    # sparse request (h5py fancy path) too
    sim2, _, _ = cache.batch([22, 0], [1])
    np.testing.assert_array_equal(sim2, full[[22, 0]][:, [1]])
    # the training path: masked softmax of the cached scores (padded frames exactly 0)
    probs = masked_softmax(torch.from_numpy(rel), torch.from_numpy(mask)).numpy()
    np.testing.assert_allclose(probs.sum(1), 1.0, rtol=1e-6)
    assert (probs[~data["mask"][rows]] == 0).all()
    logits = np.where(data["mask"][rows], data["rel"][rows], -np.inf)
    expected = np.exp(logits - logits.max(1, keepdims=True))
    np.testing.assert_allclose(probs, expected / expected.sum(1, keepdims=True), rtol=1e-5)
    with pytest.raises(IndexError):
        cache.batch([N_C], [0])


def test_pickle_and_lookups(tmp_path: Path, data: dict) -> None:
    cache = TeacherCache(_write_full(tmp_path / "t.h5", data))
    cache.batch([1], [1])  # opens the handle
    clone = pickle.loads(pickle.dumps(cache))
    np.testing.assert_array_equal(clone.batch([2, 1], [3])[0], cache.batch([2, 1], [3])[0])
    assert cache.row_of_caption(["cap4", "cap0"]).tolist() == [4, 0]
    assert cache.col_of_video(["vid8"]).tolist() == [8]
    with pytest.raises(InputError) as exc:
        cache.row_of_caption(["nope"])
    assert exc.value.item_id == "nope"


def test_resume_equals_uninterrupted(tmp_path: Path, data: dict) -> None:
    reference = _write_full(tmp_path / "ref.h5", data)
    path = tmp_path / "t.h5"
    first = _writer(path, data)
    assert first.pending_blocks() == [0, 1, 2, 3, 4]
    _fill(first, data, blocks=[0, 3])
    first.close()  # "killed"
    assert not path.exists() and tmp_path_for(path).exists()
    second = _writer(path, data)
    assert second.pending_blocks() == [1, 2, 4]
    with pytest.raises(CacheIntegrityError, match="not written"):
        second.finalize()
    _fill(second, data)
    second.finalize()
    a, b = _arrays(reference), _arrays(path)
    for name in a:
        np.testing.assert_array_equal(a[name], b[name], err_msg=name)


def test_resume_mismatch_errors_or_restarts(tmp_path: Path, data: dict) -> None:
    path = tmp_path / "t.h5"
    writer = _writer(path, data)
    _fill(writer, data, blocks=[0])
    writer.close()
    with pytest.raises(MismatchError) as exc:
        _writer(path, data, meta=_meta(frames_digest="other"))
    assert "frames-d" in str(exc.value) and "other" in str(exc.value)
    restarted = _writer(path, data, meta=_meta(frames_digest="other"), on_mismatch="restart")
    assert restarted.pending_blocks() == [0, 1, 2, 3, 4]
    restarted.close()
    tmp_path_for(path).write_bytes(b"garbage, not hdf5")
    fresh = _writer(path, data)
    assert fresh.pending_blocks() == [0, 1, 2, 3, 4]
    fresh.close()


def test_write_block_rejects_nan_and_bad_shapes(tmp_path: Path, data: dict) -> None:
    writer = _writer(tmp_path / "t.h5", data)
    s, e = writer.block_range(1)
    bad = data["sim"][s:e].copy()
    bad[2, 1] = np.nan
    with pytest.raises(CacheIntegrityError, match=f"cap{s + 2}"):
        writer.write_block(1, bad, data["rel"][s:e], data["mask"][s:e])
    with pytest.raises(CacheIntegrityError, match="float16"):
        writer.write_block(1, data["sim"][s:e] * 1e5, data["rel"][s:e], data["mask"][s:e])
    with pytest.raises(ValueError, match="shape"):
        writer.write_block(1, data["sim"][s:e - 1], data["rel"][s:e], data["mask"][s:e])
    assert writer.pending_blocks() == [0, 1, 2, 3, 4]
    writer.close()


@pytest.mark.parametrize("assignment", ["strided", "contiguous"])
@pytest.mark.parametrize("copy", [False, True])
def test_shards_merge_equal_single(tmp_path: Path, data: dict, assignment: str,
                                   copy: bool) -> None:
    reference = _write_full(tmp_path / "ref.h5", data)
    final = tmp_path / "out" / "xclip.h5"
    world = 2
    shards = []
    owned = []
    for rank in range(world):
        writer = _writer(shard_path(final, rank, world), data, shard_rank=rank,
                         shard_world=world, shard_assignment=assignment)
        owned.append(writer.owned_blocks())
        _fill(writer, data)
        shards.append(writer.finalize())
    assert sorted(owned[0] + owned[1]) == [0, 1, 2, 3, 4]
    if assignment == "strided":
        assert owned[0] == [0, 2, 4]
    assert verify(shards[0]) == []
    with pytest.raises(CacheIntegrityError):  # a shard alone is not a usable cache
        TeacherCache(shards[0])
    merge_shards(shards, final, copy=copy)
    a, b = _arrays(reference), _arrays(final)
    for name in a:
        np.testing.assert_array_equal(a[name], b[name], err_msg=name)
    assert verify(final) == []
    with h5py.File(final, "r") as f:
        assert f["sim"].is_virtual == (not copy)
    summary = info(final)
    assert summary["provenance"]["layout"] == ("merged" if copy else "virtual")
    if not copy:
        assert summary["virtual_sources"] == [p.name for p in shards]
        # the directory can move as a whole: sources are relative
        moved = tmp_path / "moved"
        (tmp_path / "out").rename(moved)
        cache = TeacherCache(moved / "xclip.h5")
        np.testing.assert_array_equal(cache.batch([4, 9], [0, 8])[0],
                                      data["sim"].astype(np.float16)[[4, 9]][:, [0, 8]])
        (moved / shards[1].name).unlink()
        problems = verify(moved / "xclip.h5")
        assert any("source" in p and shards[1].name in p for p in problems)
        assert any("NaN" in p for p in problems)
        with pytest.raises(InputError, match="source"):
            TeacherCache(moved / "xclip.h5")


def test_merge_refuses_missing_block_and_mismatch(tmp_path: Path, data: dict) -> None:
    final = tmp_path / "x.h5"
    writer = _writer(shard_path(final, 0, 2), data, shard_rank=0, shard_world=2)
    _fill(writer, data)
    only = writer.finalize()
    with pytest.raises(CacheIntegrityError, match="in no shard"):
        merge_shards([only], final)
    other = _writer(shard_path(final, 1, 2), data, shard_rank=1, shard_world=2,
                    meta=_meta(checkpoint_sha256="f" * 64))
    _fill(other, data)
    with pytest.raises(MismatchError, match="checkpoint_sha256"):
        merge_shards([only, other.finalize()], final)


def test_verify_catches_problems(tmp_path: Path, data: dict) -> None:
    path = _write_full(tmp_path / "t.h5", data)
    ckpt = tmp_path / "ckpt.pt"
    ckpt.write_bytes(b"weights")
    assert verify(path, frames_digest="frames-d", manifest_digest="manifest-d") == []
    problems = verify(path, frames_digest="F2", manifest_digest="M2", checkpoint_path=ckpt)
    assert len(problems) == 3
    assert any("frames digest" in p and "F2" in p and "frames-d" in p for p in problems)
    assert any("manifest digest" in p and "M2" in p for p in problems)
    assert any("checkpoint sha256" in p for p in problems)

    nan_path = _write_full(tmp_path / "nan.h5", data)
    with h5py.File(nan_path, "a") as f:
        f["sim"][7, 3] = np.nan
    assert any("NaN" in p and "row 7" in p for p in verify(nan_path))

    missing = _write_full(tmp_path / "missing.h5", data)
    with h5py.File(missing, "a") as f:
        f["rows_done"][2] = False
    assert any("not written" in p and "block 2" in p for p in verify(missing))
    with pytest.raises(CacheIntegrityError):
        TeacherCache(missing)

    shape = _write_full(tmp_path / "shape.h5", data)
    with h5py.File(shape, "a") as f:
        del f["caption_video"]
        f["caption_video"] = np.zeros(N_C - 1, dtype=np.int64)
    assert any("caption_video has shape" in p for p in verify(shape))

    rng_bad = _write_full(tmp_path / "range.h5", data)
    with h5py.File(rng_bad, "a") as f:
        f["caption_video"][0] = N_V
    assert any("caption_video[0]" in p for p in verify(rng_bad))

    (tmp_path / "junk.h5").write_bytes(b"nope")
    assert "cannot open" in verify(tmp_path / "junk.h5")[0]


def test_check_compatible(tmp_path: Path, data: dict) -> None:
    cache = TeacherCache(_write_full(tmp_path / "t.h5", data))
    cache.check_compatible(max_frames=N_F, max_words=32, caption_ids=data["caption_ids"][:4],
                           video_ids=data["video_ids"], frames_digest="frames-d",
                           manifest_digest="manifest-d")
    cases = [
        (dict(max_frames=12), ["12", str(N_F)]),
        (dict(max_words=77), ["77", "32"]),
        (dict(caption_ids=["cap1", "ghost"]), ["ghost"]),
        (dict(video_ids=["vid0", "vid99"]), ["vid99"]),
        (dict(frames_digest="abc"), ["abc", "frames-d"]),
        (dict(manifest_digest="xyz"), ["xyz", "manifest-d"]),
    ]
    for kwargs, words in cases:
        with pytest.raises(MismatchError) as exc:
            cache.check_compatible(**kwargs)
        for word in words:
            assert word in str(exc.value), (kwargs, str(exc.value))


def test_chunk_shape_bounds() -> None:
    """Checksummed chunks are read whole, so a random row must cost about one row's bytes."""
    rows, cols = chunk_shape(180_000, 9_000, 986)
    assert (rows, cols) == (1, 9_000)  # MSR-VTT: one caption per chunk
    rows, cols = chunk_shape(48_000, 1_200, 1024)
    assert cols == 1_200 and 1024 % rows == 0 and 2 <= rows and rows * cols * 2 <= 16 << 10
    rows, cols = chunk_shape(10, 3_000_000, 10)
    assert rows == 1 and rows * cols * 2 <= 4 << 20


# ------------------------------------------------------------------------------ CLI
def test_cli_info_and_verify(tmp_path: Path, data: dict) -> None:
    path = _write_full(tmp_path / "t.h5", data)
    runner = CliRunner()
    result = runner.invoke(main, ["cache", "info", str(path), "--json"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.output)
    assert summary["n_captions"] == N_C and summary["provenance"]["teacher_kind"] == "xclip"
    result = runner.invoke(main, ["cache", "info", str(path)])
    assert result.exit_code == 0 and "xclip" in result.output

    result = runner.invoke(main, ["cache", "verify", str(path)])
    assert result.exit_code == 0 and "OK" in result.output

    frames = tmp_path / "frames.h5"
    with h5py.File(frames, "w") as f:
        f.attrs["content_digest"] = "other-frames"
    ckpt = tmp_path / "ckpt.pt"
    ckpt.write_bytes(b"w")
    manifest = Manifest(
        __import__("pandas").DataFrame({"video_id": ["v"], "path": ["v.mp4"], "split": ["train"]}),
        __import__("pandas").DataFrame({"caption_id": ["c"], "video_id": ["v"],
                                        "split": ["train"], "text": ["a cat"]}),
    )
    manifest.save(tmp_path / "manifest")
    result = runner.invoke(main, ["cache", "verify", str(path), "--frames", str(frames),
                                  "--manifest", str(tmp_path / "manifest"),
                                  "--checkpoint", str(ckpt)])
    assert result.exit_code == 1
    assert "3 problem(s)" in result.output
    assert "other-frames" in result.output and manifest.digest() in result.output

    result = runner.invoke(main, ["cache", "info", str(tmp_path / "absent.h5")])
    assert result.exit_code == 1 and "not found" in result.output
