"""DiDeMo and ActivityNet (video–paragraph) importers."""

from __future__ import annotations

import json
from pathlib import Path

from pipeline.data.importers import import_activitynet, import_didemo
from tests.importer_fixtures import (
    expect_input_error,
    make_activitynet,
    make_didemo,
    write_json,
    write_text,
)


def test_didemo_exact_manifest(tmp_path: Path) -> None:
    manifest = import_didemo(make_didemo(tmp_path)).manifest
    # json-key order (v2 appears first in the JSON), one paragraph each, clip [0, 31].
    assert list(manifest.videos["video_id"]) == ["v2@N0_b", "v1@N0_a", "v3@N0_c"]
    assert list(manifest.videos["split"]) == ["train", "train", "test"]
    assert list(manifest.videos["start"]) == [0.0] * 3
    assert list(manifest.videos["end"]) == [31.0] * 3
    assert Path(manifest.videos["path"].iloc[0]).name == "v2@N0_b.mov"
    assert list(manifest.captions["caption_id"]) == ["v2@N0_b#0", "v1@N0_a#0", "v3@N0_c#0"]
    assert list(manifest.captions["text"]) == [
        "first of two second of two", "the dog jumps", "a test moment"]


def test_didemo_bad_input(tmp_path: Path) -> None:
    root = make_didemo(tmp_path)
    ann = root / "Annotations"
    (root / "VideoData" / "v1@N0_a.mp4").unlink()
    expect_input_error(lambda: import_didemo(root), file="train_list.txt", line=1,
                       item_id="v1@N0_a")
    result = import_didemo(root, skip_bad=True)
    assert list(result.manifest.videos["video_id"]) == ["v2@N0_b", "v3@N0_c"]
    assert [(Path(r.file).name, r.line, r.id) for r in result.skipped] == [
        ("train_list.txt", 1, "v1@N0_a")]

    make_didemo(root)
    write_text(ann / "train_list.txt", "v1@N0_a\nv2@N0_b\nv1@N0_a\nnodesc\n")
    expect_input_error(lambda: import_didemo(root), file="train_list.txt", line=3,
                       item_id="v1@N0_a")
    result = import_didemo(root, skip_bad=True)
    assert [(r.line, r.id) for r in result.skipped] == [(3, "v1@N0_a"), (4, "nodesc")]

    make_didemo(root)
    data = json.loads((ann / "train_data.json").read_text())
    data[3]["description"] = "  "
    write_json(ann / "train_data.json", data)
    expect_input_error(lambda: import_didemo(root), file="train_data.json", item_id="v2@N0_b#0")
    assert "v2@N0_b" not in set(import_didemo(root, skip_bad=True).manifest.videos["video_id"])

    write_text(ann / "test_data.json", '[{"video": "v3@N0_c",\n "description": }]')
    expect_input_error(lambda: import_didemo(root, skip_bad=True), file="test_data.json", line=2)


def test_activitynet_exact_manifest(tmp_path: Path) -> None:
    root = make_activitynet(tmp_path)
    manifest = import_activitynet(root, val_fraction=0.0).manifest
    assert list(manifest.videos["video_id"]) == ["v_aaa", "v_bbb", "v_ccc", "v_ddd"]
    assert list(manifest.videos["split"]) == ["train", "train", "train", "test"]
    assert list(manifest.videos["start"]) == [0.0] * 4
    assert list(manifest.videos["end"]) == [83.0, 10.0, 6.0, 31.0]
    assert [Path(p).name for p in manifest.videos["path"]] == [
        "v_aaa.mp4", "v_bbb.mkv", "v_ccc.webm", "v_ddd.mp4"]
    assert list(manifest.captions["caption_id"]) == ["v_aaa#0", "v_bbb#0", "v_ccc#0", "v_ddd#0"]
    assert manifest.captions["text"].iloc[0] == "A man runs. He stops."
    held = import_activitynet(root).manifest  # default: 5% of train (at least one) as val
    assert held.videos["split"].value_counts().to_dict() == {"train": 2, "val": 1, "test": 1}
    assert held.digest() == import_activitynet(root).manifest.digest()


def test_activitynet_bad_input(tmp_path: Path) -> None:
    root = make_activitynet(tmp_path)
    ann = root / "Annotations"
    write_json(ann / "val_ids.json", ["v_ddd", "v_aaa"])
    err = expect_input_error(lambda: import_activitynet(root), file="val_ids.json",
                             item_id="v_aaa")
    assert "duplicate" in str(err)
    make_activitynet(root)
    write_json(ann / "train_ids.json", ["v_aaa", "v_zzz"])
    expect_input_error(lambda: import_activitynet(root), file="train_ids.json", item_id="v_zzz")
    make_activitynet(root)
    (root / "VideoData" / "v_bbb.mkv").unlink()
    expect_input_error(lambda: import_activitynet(root), file="train_ids.json", item_id="v_bbb")
    result = import_activitynet(root, skip_bad=True, val_fraction=0.0)
    assert "v_bbb" not in set(result.manifest.videos["video_id"])
    assert [r.id for r in result.skipped] == ["v_bbb"]
    make_activitynet(root)
    data = json.loads((ann / "train.json").read_text())
    data["v_ccc"]["sentences"] = ["ok", ""]
    data["v_bbb"]["duration"] = "ten"
    write_json(ann / "train.json", data)
    expect_input_error(lambda: import_activitynet(root), file="train.json", item_id="v_bbb")
    result = import_activitynet(root, skip_bad=True, val_fraction=0.0)
    assert list(result.manifest.videos["video_id"]) == ["v_aaa", "v_ddd"]
    assert [r.id for r in result.skipped] == ["v_bbb", "v_ccc#0"]
