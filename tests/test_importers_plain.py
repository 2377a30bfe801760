"""Plain CSV / JSONL manifests."""

from __future__ import annotations

import json
from pathlib import Path

from pipeline.data.importers import import_csv, import_jsonl
from tests.importer_fixtures import expect_input_error, touch, write_text

CSV = ("video_id,path,split,text,caption_id,start,end\n"
       "a,vids/a.mp4,train,first of a,,,\n"
       "b,vids/b.mp4,test,\"b, quoted\",b-custom,1.5,4\n"
       "a,,,second of a,,,\n")


def test_csv_exact_manifest(tmp_path: Path) -> None:
    touch(tmp_path / "vids", "a.mp4", "b.mp4")
    manifest = import_csv(write_text(tmp_path / "m.csv", CSV)).manifest
    assert list(manifest.videos["video_id"]) == ["a", "b"]
    assert list(manifest.videos["split"]) == ["train", "test"]
    assert manifest.videos["path"].iloc[0] == str((tmp_path / "vids" / "a.mp4").resolve())
    assert manifest.videos["start"].iloc[1] == 1.5 and manifest.videos["end"].iloc[1] == 4.0
    assert manifest.videos["start"].isna().iloc[0]
    assert list(manifest.captions["caption_id"]) == ["a#0", "b-custom", "a#1"]
    assert list(manifest.captions["text"]) == ["first of a", "b, quoted", "second of a"]


def test_jsonl_same_as_csv(tmp_path: Path) -> None:
    touch(tmp_path / "vids", "a.mp4", "b.mp4")
    rows = [{"video_id": "a", "path": "vids/a.mp4", "split": "train", "text": "first of a"},
            {"video_id": "b", "path": "vids/b.mp4", "split": "test", "text": "b, quoted",
             "caption_id": "b-custom", "start": 1.5, "end": 4},
            {"video_id": "a", "text": "second of a"}]
    path = write_text(tmp_path / "m.jsonl", "".join(json.dumps(r) + "\n" for r in rows))
    jsonl = import_jsonl(path).manifest
    csv = import_csv(write_text(tmp_path / "m.csv", CSV)).manifest
    assert jsonl.digest() == csv.digest()


def test_plain_bad_input(tmp_path: Path) -> None:
    touch(tmp_path / "vids", "a.mp4")
    path = tmp_path / "m.csv"
    header = "video_id,path,split,text\n"
    write_text(path, header + "a,vids/a.mp4,train,x\nb,vids/b.mp4,train,y\n")
    expect_input_error(lambda: import_csv(path), file="m.csv", line=3, item_id="b")
    write_text(path, header + "a,vids/a.mp4,train,x\nz,,,orphan\n")
    expect_input_error(lambda: import_csv(path), file="m.csv", line=3, item_id="z#0")
    write_text(path, header + "a,vids/a.mp4,train,x\na,vids/a.mp4,test,y\n")
    expect_input_error(lambda: import_csv(path), file="m.csv", line=3, item_id="a")
    write_text(path, "video_id,path,split,text,caption_id\n"
                     "a,vids/a.mp4,train,x,c1\na,,,y,c1\n")
    expect_input_error(lambda: import_csv(path), file="m.csv", line=3, item_id="c1")
    write_text(path, header + "a,vids/a.mp4,train,x,extra\n")
    expect_input_error(lambda: import_csv(path), file="m.csv", line=2, item_id="a")
    write_text(path, header + "a,vids/a.mp4,train,\n")
    expect_input_error(lambda: import_csv(path), file="m.csv", line=2, item_id="a#0")
    write_text(path, "video_id,text\na,x\n")
    expect_input_error(lambda: import_csv(path), file="m.csv", line=1)

    jsonl = tmp_path / "m.jsonl"
    good = json.dumps({"video_id": "a", "path": "vids/a.mp4", "split": "train", "text": "x"})
    write_text(jsonl, good + "\n{broken\n")
    expect_input_error(lambda: import_jsonl(jsonl), file="m.jsonl", line=2)
    result = import_jsonl(jsonl, skip_bad=True)
    assert len(result.manifest.captions) == 1
    assert [(r.line, r.reason.split(":")[0]) for r in result.skipped] == [(2, "malformed JSON")]
