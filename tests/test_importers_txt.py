"""TeachCLIP VideoSet/QuerySet/ground-truth text files."""

from __future__ import annotations

import math
from pathlib import Path

from pipeline.data.importers import import_teachclip_txt
from tests.importer_fixtures import expect_input_error, make_teachclip_txt, touch, write_text

SET = ("test", "msrvtt1k-test", "msrvtt1k-test-query", "gt")


def test_txt_exact_manifest(tmp_path: Path) -> None:
    manifest = import_teachclip_txt(make_teachclip_txt(tmp_path), sets=[SET]).manifest
    assert list(manifest.videos["video_id"]) == ["video7020", "video7021", "video7022"]
    assert [Path(p).name for p in manifest.videos["path"]] == [
        "video7020.mp4", "video7021.avi", "video7022"]
    assert set(manifest.videos["split"]) == {"test"}
    assert manifest.videos["start"].isna().all()
    # Ground-truth order; split at the FIRST tab only; text stripped.
    assert list(manifest.captions["caption_id"]) == [
        "video7020#enc#0", "video7021#enc#0", "video7020#enc#1"]
    assert list(manifest.captions["text"]) == [
        "a woman is cooking", "a dog\twith a tab", "cooking in a kitchen"]
    assert list(manifest.captions["video_id"]) == ["video7020", "video7021", "video7020"]


def test_txt_didemo_clip_and_two_sets(tmp_path: Path) -> None:
    root = make_teachclip_txt(tmp_path / "msrvtt")  # tmp_path itself contains "didemo"
    write_text(root / "VideoSet" / "didemo-train.txt", "d1\n")
    write_text(root / "QuerySet" / "didemo-train-query.txt", "q1\ta paragraph\n")
    write_text(root / "Annotations" / "didemo-gt.txt", "q1\td1\n")
    touch(root / "VideoData", "d1.mp4")
    manifest = import_teachclip_txt(
        root, sets=[("train", "didemo-train.txt", "didemo-train-query", "didemo-gt"), SET]
    ).manifest
    row = manifest.videos.set_index("video_id").loc["d1"]
    assert (row["split"], row["start"], row["end"]) == ("train", 0.0, 31.0)
    assert math.isnan(manifest.videos.set_index("video_id").loc["video7020", "end"])
    # The collection directory name counts too (data/datasets/didemo/VideoSet/test.txt).
    collection = make_teachclip_txt(tmp_path / "didemo")
    manifest = import_teachclip_txt(collection, sets=[SET]).manifest
    assert list(manifest.videos["end"]) == [31.0] * 3


def test_txt_bad_input(tmp_path: Path) -> None:
    root = make_teachclip_txt(tmp_path)
    run = lambda skip=False: import_teachclip_txt(root, sets=[SET], skip_bad=skip)  # noqa: E731
    write_text(root / "Annotations" / "gt.txt",
               "video7020#enc#0\tvideo7020\nvideo7021#enc#0\tvideo9999\n"
               "video7020#enc#1\tvideo7020\n")
    expect_input_error(run, file="gt.txt", line=2, item_id="video7021#enc#0")
    result = run(True)
    assert [(Path(r.file).name, r.line, r.id) for r in result.skipped] == [
        ("gt.txt", 2, "video7021#enc#0")]
    assert list(result.manifest.captions["caption_id"]) == ["video7020#enc#0", "video7020#enc#1"]

    write_text(root / "Annotations" / "gt.txt", "video7020#enc#0\tvideo7020\textra\n")
    expect_input_error(run, file="gt.txt", line=1, item_id="video7020#enc#0")

    make_teachclip_txt(root)
    write_text(root / "QuerySet" / "msrvtt1k-test-query.txt",
               b"video7021#enc#0\tok\nvideo7020#enc#0\tgood\nvideo7020#enc#1\tcaf\xe9\n")
    expect_input_error(run, file="msrvtt1k-test-query.txt", line=3, item_id="video7020#enc#1")
    write_text(root / "QuerySet" / "msrvtt1k-test-query.txt",
               "video7021#enc#0\tok\nvideo7020#enc#0\t  \nvideo7020#enc#1\tfine\n"
               "video7020#enc#1\tdup\n")
    expect_input_error(run, file="msrvtt1k-test-query.txt", line=2, item_id="video7020#enc#0")
    result = run(True)
    assert [(r.line, r.id) for r in result.skipped] == [
        (2, "video7020#enc#0"), (4, "video7020#enc#1")]
    assert list(result.manifest.captions["caption_id"]) == ["video7021#enc#0", "video7020#enc#1"]

    make_teachclip_txt(root)
    (root / "VideoData" / "video7022").unlink()
    expect_input_error(run, file="msrvtt1k-test.txt", line=3, item_id="video7022")
    write_text(root / "VideoSet" / "msrvtt1k-test.txt", "video7020\nvideo7021\nvideo7020\n")
    expect_input_error(run, file="msrvtt1k-test.txt", line=3, item_id="video7020")
