"""The direct row reader of the teacher cache (``pipeline.cache.rows``) returns h5py's bytes."""

from __future__ import annotations

import pickle
from pathlib import Path

import h5py
import numpy as np
import pytest

from pipeline.cache.merge import merge_shards
from pipeline.cache.reader import TeacherCache
from pipeline.cache.rows import DirectRows
from pipeline.cache.schema import shard_path
from pipeline.errors import InputError
from tests.test_teacher_cache import _fill, _write_full, _writer, data  # noqa: F401

ROWS = np.array([0, 1, 2, 7, 8, 13, 21, 22])  # runs across chunk and block edges


def _both(path: Path) -> tuple[TeacherCache, TeacherCache]:
    return TeacherCache(path, direct=True), TeacherCache(path, direct=False)


def test_direct_equals_h5py_and_reads_runs(tmp_path: Path, data: dict) -> None:  # noqa: F811
    direct, plain = _both(_write_full(tmp_path / "t.h5", data))
    assert direct._direct_rows() is not None and plain._direct_rows() is None
    np.testing.assert_array_equal(direct._read_rows(ROWS), plain._read_rows(ROWS))
    rows, cols = np.array([17, 3, 3, 22, 0, 17]), np.array([8, 2, 2, 0])
    for got, want in zip(direct.batch(rows, cols), plain.batch(rows, cols), strict=True):
        np.testing.assert_array_equal(got, want)
    np.testing.assert_array_equal(direct._read_rows(np.arange(23)),
                                  data["sim"].astype(np.float16))
    assert direct._read_rows(np.array([], dtype=np.int64)).shape == (0, 9)
    clone = pickle.loads(pickle.dumps(direct))  # a DataLoader worker: own descriptors
    assert clone._rows is not None and clone._rows._fds == []
    np.testing.assert_array_equal(clone._read_rows(ROWS), plain._read_rows(ROWS))
    direct.close()
    np.testing.assert_array_equal(direct._read_rows(ROWS[:2]), plain._read_rows(ROWS[:2]))


def test_environment_switch(tmp_path: Path, data: dict,  # noqa: F811
                            monkeypatch: pytest.MonkeyPatch) -> None:
    path = _write_full(tmp_path / "t.h5", data)
    # default: checksummed reads through HDF5; direct rows only when asked for
    monkeypatch.delenv("TEACHCLIP_CACHE_READER", raising=False)
    assert TeacherCache(path)._direct_rows() is None
    monkeypatch.setenv("TEACHCLIP_CACHE_READER", "direct")
    assert TeacherCache(path)._direct_rows() is not None
    monkeypatch.setenv("TEACHCLIP_CACHE_READER", "h5py")
    assert TeacherCache(path)._direct_rows() is None


def test_virtual_dataset_over_shards(tmp_path: Path, data: dict) -> None:  # noqa: F811
    final = tmp_path / "out" / "xclip.h5"
    shards = []
    for rank in range(2):
        writer = _writer(shard_path(final, rank, 2), data, shard_rank=rank, shard_world=2)
        _fill(writer, data)
        shards.append(writer.finalize())
    merge_shards(shards, final)
    direct, plain = _both(final)
    reader = direct._direct_rows()
    assert reader is not None and [p.name for p in reader.paths] == [s.name for s in shards]
    np.testing.assert_array_equal(direct._read_rows(np.arange(23)), plain._read_rows(np.arange(23)))


def _dataset(path: Path, **options: object) -> np.ndarray:
    values = np.arange(40 * 6, dtype=np.float16).reshape(40, 6)
    with h5py.File(path, "w") as handle:
        handle.create_dataset("x", data=values, chunks=(7, 6), **options)
    return values


@pytest.mark.parametrize("options", [{"fletcher32": True}, {}])
def test_checksummed_or_plain_chunks_are_read_directly(tmp_path: Path, options: dict) -> None:
    values = _dataset(tmp_path / "x.h5", **options)
    with h5py.File(tmp_path / "x.h5", "r") as handle:
        reader = DirectRows.open(handle["x"], tmp_path / "x.h5")
    assert reader is not None
    np.testing.assert_array_equal(reader.read(np.array([0, 6, 7, 8, 39])),
                                  values[[0, 6, 7, 8, 39]])


@pytest.mark.parametrize("options", [{"compression": "gzip"}, {"shuffle": True},
                                     {"compression": "lzf"}])
def test_filtered_chunks_fall_back_to_h5py(tmp_path: Path, options: dict) -> None:
    _dataset(tmp_path / "x.h5", **options)
    with h5py.File(tmp_path / "x.h5", "r") as handle:
        assert DirectRows.open(handle["x"], tmp_path / "x.h5") is None


def test_unwritten_chunk_or_partial_row_chunks_fall_back(tmp_path: Path) -> None:
    with h5py.File(tmp_path / "x.h5", "w") as handle:
        handle.create_dataset("gap", shape=(20, 4), dtype=np.float16, chunks=(5, 4))
        handle["gap"][:5] = 1  # chunks 1..3 never allocated
        handle.create_dataset("narrow", data=np.zeros((8, 8), np.float16), chunks=(4, 4))
    with h5py.File(tmp_path / "x.h5", "r") as handle:
        assert DirectRows.open(handle["gap"], tmp_path / "x.h5") is None
        assert DirectRows.open(handle["narrow"], tmp_path / "x.h5") is None


def test_truncated_file_is_an_input_error(tmp_path: Path) -> None:
    _dataset(tmp_path / "x.h5")
    with h5py.File(tmp_path / "x.h5", "r") as handle:
        reader = DirectRows.open(handle["x"], tmp_path / "x.h5")
    assert reader is not None
    end = int(reader.row_offset[39])
    with open(tmp_path / "x.h5", "r+b") as handle:
        handle.truncate(end + 4)
    with pytest.raises(InputError, match="truncated") as info:
        reader.read(np.array([39]))
    assert info.value.file == str(tmp_path / "x.h5")
