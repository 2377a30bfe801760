"""``teachclip data import`` end to end through click."""

from __future__ import annotations

import csv
from pathlib import Path

from click.testing import CliRunner

import stages.data_import  # noqa: F401  (registers the command on the group)
from pipeline.data.manifest import Manifest
from stages.groups import main
from tests.importer_fixtures import make_msrvtt, make_teachclip_txt


def _invoke(*args: str):
    return CliRunner().invoke(main, ["data", "import", *args])


def test_cli_msrvtt_writes_relative_manifest(tmp_path: Path) -> None:
    root = make_msrvtt(tmp_path / "msrvtt")
    out = tmp_path / "manifest"
    result = _invoke("msrvtt", str(root), "--out", str(out), "--val-fraction", "0")
    assert result.exit_code == 0, result.output
    assert "5 videos (train 3, val 0, test 2), 8 captions" in result.output
    manifest = Manifest.load(out)
    assert manifest.videos["path"].iloc[0] == "../msrvtt/VideoData/video0.mp4"
    assert all(p.is_file() for p in manifest.resolved_paths())
    assert not (out / "skipped.csv").exists()

    absolute = tmp_path / "absolute"
    assert _invoke("msrvtt", str(root), "--out", str(absolute), "--absolute-paths").exit_code == 0
    assert Path(Manifest.load(absolute).videos["path"].iloc[0]).is_absolute()


def test_cli_error_is_one_line_and_writes_nothing(tmp_path: Path) -> None:
    root = make_msrvtt(tmp_path / "msrvtt")
    (root / "VideoData" / "video2.mp4").unlink()
    out = tmp_path / "manifest"
    result = _invoke("msrvtt", str(root), "--out", str(out))
    assert result.exit_code == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: ")
    assert "MSRVTT_train.9k.csv:4" in lines[0] and "'video2'" in lines[0]
    assert not out.exists() or not any(out.iterdir())

    # An existing manifest survives a failed re-import untouched.
    (root / "VideoData" / "video2.mp4").write_bytes(b"")
    assert _invoke("msrvtt", str(root), "--out", str(out)).exit_code == 0
    before = (out / "captions.csv").read_bytes()
    (root / "VideoData" / "video2.mp4").unlink()
    assert _invoke("msrvtt", str(root), "--out", str(out)).exit_code == 1
    assert (out / "captions.csv").read_bytes() == before
    assert sorted(p.name for p in out.iterdir()) == ["captions.csv", "videos.csv"]


def test_cli_skip_bad_writes_skip_list(tmp_path: Path) -> None:
    root = make_msrvtt(tmp_path / "msrvtt")
    (root / "VideoData" / "video2.mp4").unlink()
    (root / "VideoData" / "video4").unlink()
    out = tmp_path / "manifest"
    result = _invoke("msrvtt", str(root), "--out", str(out), "--skip-bad", "--val-fraction", "0")
    assert result.exit_code == 0, result.output
    assert "skipped 2 items" in result.output
    with open(out / "skipped.csv", newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    assert [(Path(r["file"]).name, r["line"], r["id"]) for r in rows] == [
        ("MSRVTT_train.9k.csv", "4", "video2"), ("MSRVTT_JSFUSION_test.csv", "3", "video4")]
    assert list(Manifest.load(out).videos["video_id"]) == ["video0", "video1", "video3"]
    # A clean re-import without --skip-bad removes the now stale skip list.
    (root / "VideoData" / "video2.mp4").write_bytes(b"")
    (root / "VideoData" / "video4").write_bytes(b"")
    assert _invoke("msrvtt", str(root), "--out", str(out)).exit_code == 0
    assert not (out / "skipped.csv").exists()


def test_cli_options_per_format(tmp_path: Path) -> None:
    root = make_teachclip_txt(tmp_path / "msrvtt")
    out = tmp_path / "manifest"
    result = _invoke("teachclip-txt", str(root), "--out", str(out),
                     "--set", "test", "msrvtt1k-test", "msrvtt1k-test-query", "gt")
    assert result.exit_code == 0, result.output
    assert list(Manifest.load(out).captions["caption_id"]) == [
        "video7020#enc#0", "video7021#enc#0", "video7020#enc#1"]
    bad = _invoke("didemo", str(root), "--out", str(out), "--train-csv", "x.csv")
    assert bad.exit_code == 2 and "--train-csv does not apply" in bad.output
    missing = _invoke("teachclip-txt", str(root), "--out", str(out))
    assert missing.exit_code == 1 and "at least one set" in missing.stderr
