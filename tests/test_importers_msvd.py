"""MSVD importer: raw-captions.pkl + split lists + walked video directory."""

from __future__ import annotations

import pickle
from pathlib import Path

import pytest

from pipeline.data.importers import import_msvd
from pipeline.errors import InputError
from tests.importer_fixtures import expect_input_error, make_msvd, touch, write_text


def test_msvd_exact_manifest(tmp_path: Path) -> None:
    manifest = import_msvd(make_msvd(tmp_path)).manifest
    assert list(manifest.videos["video_id"]) == ["vidA_1_5", "vidB_0_3", "vidC_2_9"]
    assert list(manifest.videos["split"]) == ["train", "train", "test"]
    assert Path(manifest.videos["path"].iloc[1]).parts[-2:] == ("sub", "vidB_0_3.avi")
    assert list(manifest.captions["caption_id"]) == [
        "vidA_1_5#0", "vidA_1_5#1", "vidB_0_3#0", "vidC_2_9#0", "vidC_2_9#1"]
    assert list(manifest.captions["text"]) == [
        "a man plays a guitar", "man playing", "a dog runs", "a woman sings", "singing"]


def test_msvd_missing_file_and_ambiguous_file(tmp_path: Path) -> None:
    root = make_msvd(tmp_path)
    (root / "VideoData" / "vidC_2_9.avi").unlink()
    expect_input_error(lambda: import_msvd(root), file="test_list.txt", line=1,
                       item_id="vidC_2_9")
    touch(root / "VideoData", "vidC_2_9.avi", "vidC_2_9.mp4")
    err = expect_input_error(lambda: import_msvd(root), file="test_list.txt", line=1,
                             item_id="vidC_2_9")
    assert "several" in str(err)


def test_msvd_duplicates_and_unknown(tmp_path: Path) -> None:
    root = make_msvd(tmp_path)
    write_text(root / "Annotations" / "test_list.txt", "vidC_2_9\nvidA_1_5\n")
    err = expect_input_error(lambda: import_msvd(root), file="test_list.txt", line=2,
                             item_id="vidA_1_5")
    assert "train_list.txt:1" in str(err)
    write_text(root / "Annotations" / "test_list.txt", "vidC_2_9\nnocaps_1_2\n")
    expect_input_error(lambda: import_msvd(root), file="test_list.txt", line=2,
                       item_id="nocaps_1_2")
    result = import_msvd(root, skip_bad=True)
    assert [(Path(r.file).name, r.line, r.id) for r in result.skipped] == [
        ("test_list.txt", 2, "nocaps_1_2")]


def test_msvd_bad_captions(tmp_path: Path) -> None:
    root = make_msvd(tmp_path)
    pkl = root / "Annotations" / "raw-captions.pkl"
    pkl.write_bytes(pickle.dumps({"vidA_1_5": [["ok"], []], "vidB_0_3": [[b"caf\xe9"]],
                                  "vidC_2_9": ["a string"]}))
    expect_input_error(lambda: import_msvd(root), file="raw-captions.pkl", item_id="vidA_1_5#1")
    result = import_msvd(root, skip_bad=True)
    assert list(result.manifest.captions["caption_id"]) == ["vidA_1_5#0"]
    assert [r.id for r in result.skipped] == [
        "vidA_1_5#1", "vidB_0_3#0", "vidC_2_9#0", "vidB_0_3", "vidC_2_9"]
    assert "UTF-8" in result.skipped[1].reason


def test_msvd_non_utf8_list_and_unsafe_pickle(tmp_path: Path) -> None:
    root = make_msvd(tmp_path)
    write_text(root / "Annotations" / "train_list.txt", b"vidA_1_5\nvid\xff\n")
    expect_input_error(lambda: import_msvd(root), file="train_list.txt", line=2,
                       item_id="vid\ufffd")
    (root / "Annotations" / "raw-captions.pkl").write_bytes(pickle.dumps({"x": Path("/")}))
    with pytest.raises(InputError, match="refusing"):
        import_msvd(root)
