"""MSR-VTT / VATEX importer on tiny files in the official formats."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from pipeline.data.importers import import_msrvtt, import_vatex
from pipeline.errors import InputError
from tests.importer_fixtures import (
    expect_input_error,
    make_msrvtt,
    touch,
    write_json,
    write_text,
)


def test_msrvtt_9k_exact_manifest(tmp_path: Path) -> None:
    root = make_msrvtt(tmp_path)
    manifest = import_msrvtt(root, val_fraction=0.0).manifest
    videos = manifest.videos
    assert list(videos["video_id"]) == ["video0", "video1", "video2", "video3", "video4"]
    assert list(videos["split"]) == ["train"] * 3 + ["test"] * 2
    assert [Path(p).name for p in videos["path"]] == [
        "video0.mp4", "video1.avi", "video2.mp4", "video3.mp4", "video4"]
    assert all(Path(p).is_absolute() for p in videos["path"])
    assert videos["start"].isna().all() and videos["end"].isna().all()
    caps = manifest.captions
    # Train: JSON order, ids <video>#<index among that video's JSON sentences>; the JSON caption
    # of test video3 is unused (test text comes from the CSV, grouped by id).
    assert list(caps["caption_id"]) == [
        "video1#0", "video0#0", "video0#1", "video2#0", "video1#1",
        "video3#0", "video4#0", "video3#1"]
    assert list(caps["text"]) == [
        "a man plays guitar", "a cat sleeps", "a cat is sleeping on a sofa",
        "cars race on a track", "someone is playing music",
        "a person cooks", "a dog, running", "someone cooks pasta"]
    assert list(caps["video_id"])[5:] == ["video3", "video4", "video3"]
    assert list(caps["split"]) == ["train"] * 5 + ["test"] * 3


def test_msrvtt_default_holds_out_val_deterministically(tmp_path: Path) -> None:
    root = make_msrvtt(tmp_path)
    first = import_msrvtt(root).manifest
    second = import_msrvtt(root).manifest
    assert first.digest() == second.digest()
    counts = first.videos["split"].value_counts().to_dict()
    assert counts == {"train": 2, "val": 1, "test": 2}
    val_video = first.videos.loc[first.videos["split"] == "val", "video_id"].item()
    assert set(first.captions.loc[first.captions["split"] == "val", "video_id"]) == {val_video}
    with pytest.raises(InputError, match="val-fraction"):
        import_msrvtt(root, val_csv="MSRVTT_JSFUSION_test.csv", val_fraction=0.1)


def test_msrvtt_7k_with_val_csv(tmp_path: Path) -> None:
    root = make_msrvtt(tmp_path, train_name="MSRVTT_train.7k.csv",
                       test_name="MSRVTT_full_split_test.csv")
    write_text(root / "Annotations" / "MSRVTT_full_split_val.csv",
               "video_id,sentence\nvideo2,val caption\n")
    write_text(root / "Annotations" / "MSRVTT_train.7k.csv", "video_id\nvideo0\nvideo1\n")
    manifest = import_msrvtt(root, train_csv="MSRVTT_train.7k.csv",
                             val_csv="MSRVTT_full_split_val.csv",
                             test_csv="MSRVTT_full_split_test.csv").manifest
    assert dict(zip(manifest.videos["video_id"], manifest.videos["split"], strict=True)) == {
        "video0": "train", "video1": "train", "video2": "val", "video3": "test",
        "video4": "test"}
    val = manifest.split("val").captions
    assert list(val["caption_id"]) == ["video2#0"] and list(val["text"]) == ["val caption"]


def test_vatex_files(tmp_path: Path) -> None:
    ann = tmp_path / "Annotations"
    write_json(ann / "VATEX_data.json", {"sentences": [
        {"video_id": "vA", "caption": "train one"}, {"video_id": "vA", "caption": "train two"}]})
    write_text(ann / "VATEX_train.csv", "video_id\nvA\n")
    write_text(ann / "VATEX_val.csv", "video_id,sentence\nvB,val one\nvB,val two\n")
    write_text(ann / "VATEX_test.csv", "video_id,sentence\nvC,t1\nvD,t2\nvC,t3\n")
    touch(tmp_path / "VideoData", "vA.mp4", "vB.mp4", "vC.mp4", "vD.avi")
    manifest = import_vatex(tmp_path).manifest
    assert list(manifest.videos["split"]) == ["train", "val", "test", "test"]
    assert list(manifest.captions["caption_id"]) == [
        "vA#0", "vA#1", "vB#0", "vB#1", "vC#0", "vD#0", "vC#1"]


# ------------------------------------------------------------------ bad input
def test_missing_video_file(tmp_path: Path) -> None:
    root = make_msrvtt(tmp_path)
    (root / "VideoData" / "video1.avi").unlink()
    expect_input_error(lambda: import_msrvtt(root), file="MSRVTT_train.9k.csv", line=3,
                       item_id="video1")
    result = import_msrvtt(root, skip_bad=True, val_fraction=0.0)
    assert "video1" not in set(result.manifest.videos["video_id"])
    assert "video1" not in set(result.manifest.captions["video_id"])
    assert [(Path(r.file).name, r.line, r.id) for r in result.skipped] == [
        ("MSRVTT_train.9k.csv", 3, "video1")]


def test_video_in_train_and_test(tmp_path: Path) -> None:
    root = make_msrvtt(tmp_path)
    write_text(root / "Annotations" / "MSRVTT_train.9k.csv", "video_id\nvideo0\nvideo3\n")
    err = expect_input_error(lambda: import_msrvtt(root), file="MSRVTT_train.9k.csv", line=3,
                             item_id="video3")
    assert "test" in str(err)
    manifest = import_msrvtt(root, skip_bad=True, val_fraction=0.0).manifest
    assert manifest.videos.set_index("video_id").loc["video3", "split"] == "test"


def test_duplicate_train_id_and_ragged_row(tmp_path: Path) -> None:
    root = make_msrvtt(tmp_path)
    write_text(root / "Annotations" / "MSRVTT_train.9k.csv", "video_id\nvideo0\nvideo0\n")
    expect_input_error(lambda: import_msrvtt(root), file="MSRVTT_train.9k.csv", line=3,
                       item_id="video0")
    make_msrvtt(tmp_path)
    write_text(root / "Annotations" / "MSRVTT_JSFUSION_test.csv",
               "key,vid_key,video_id,sentence\nret0,msr3,video3,ok\nret1,msr4,video4,a,b\n")
    expect_input_error(lambda: import_msrvtt(root), file="MSRVTT_JSFUSION_test.csv", line=3,
                       item_id="video4")
    result = import_msrvtt(root, skip_bad=True, val_fraction=0.0)
    assert list(result.manifest.split("test").videos["video_id"]) == ["video3"]
    assert result.skipped[0].reason.startswith("ragged CSV row")


def test_empty_and_non_utf8_captions(tmp_path: Path) -> None:
    root = make_msrvtt(tmp_path)
    write_text(root / "Annotations" / "MSRVTT_JSFUSION_test.csv",
               b"video_id,sentence\nvideo3,fine\nvideo4,   \nvideo3,caf\xe9\n")
    # The whole file is decoded before rows are interpreted: the bad bytes are reported first.
    expect_input_error(lambda: import_msrvtt(root), file="MSRVTT_JSFUSION_test.csv", line=4,
                       item_id="video3")
    result = import_msrvtt(root, skip_bad=True, val_fraction=0.0)
    assert [(r.line, r.id) for r in result.skipped] == [
        (4, "video3"), (3, "video4#0"), (3, "video4")]
    assert result.skipped[2].reason == "video has no captions"
    assert list(result.manifest.split("test").captions["text"]) == ["fine"]
    write_text(root / "Annotations" / "MSRVTT_JSFUSION_test.csv",
               "video_id,sentence\nvideo3,fine\nvideo4,   \n")
    expect_input_error(lambda: import_msrvtt(root), file="MSRVTT_JSFUSION_test.csv", line=3,
                       item_id="video4#0")
    # An empty train caption in the JSON is reported with its stable id.
    make_msrvtt(tmp_path)
    path = root / "Annotations" / "MSRVTT_data.json"
    path.write_text(path.read_text().replace('"a cat sleeps"', '""'))
    expect_input_error(lambda: import_msrvtt(root), file="MSRVTT_data.json", item_id="video0#0")
    manifest = import_msrvtt(root, skip_bad=True, val_fraction=0.0).manifest
    assert "video0#0" not in set(manifest.captions["caption_id"])
    assert "video0#1" in set(manifest.captions["caption_id"])


def test_malformed_json_always_fails(tmp_path: Path) -> None:
    root = make_msrvtt(tmp_path)
    write_text(root / "Annotations" / "MSRVTT_data.json", '{"sentences": [\n {"a": 1},\n oops]}')
    for skip in (False, True):
        expect_input_error(lambda skip=skip: import_msrvtt(root, skip_bad=skip),
                           file="MSRVTT_data.json", line=3)


def test_unknown_video_and_captionless_train_video(tmp_path: Path) -> None:
    root = make_msrvtt(tmp_path)
    write_text(root / "Annotations" / "MSRVTT_JSFUSION_test.csv",
               "video_id,sentence\nvideo3,ok\nvideo99,who\n")
    touch(root / "VideoData", "video99.mp4")
    expect_input_error(lambda: import_msrvtt(root), file="MSRVTT_JSFUSION_test.csv", line=3,
                       item_id="video99")
    make_msrvtt(tmp_path)
    write_text(root / "Annotations" / "MSRVTT_train.9k.csv", "video_id\nvideo0\nvideo4\n")
    write_text(root / "Annotations" / "MSRVTT_JSFUSION_test.csv", "video_id,sentence\nvideo3,x\n")
    expect_input_error(lambda: import_msrvtt(root), file="MSRVTT_train.9k.csv", line=3,
                       item_id="video4")


def test_missing_annotation_file(tmp_path: Path) -> None:
    root = make_msrvtt(tmp_path)
    expect_input_error(lambda: import_msrvtt(root, train_csv="MSRVTT_train.7k.csv"),
                       file="MSRVTT_train.7k.csv")
    assert math.isnan(import_msrvtt(root).manifest.videos["start"].iloc[0])
