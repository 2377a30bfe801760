"""A plain manifest written by hand or by another tool: CSV (with header) or JSON Lines.

One row (CSV row / JSONL object) per caption. Columns:

- ``video_id`` (required), ``text`` (required, the caption);
- ``path`` and ``split`` (train/val/test): required on at least one row of each video; other rows
  of that video may leave both empty, and rows that repeat them must agree. A relative ``path``
  resolves against ``--video-dir`` if given, else the directory of the manifest file;
- ``caption_id`` (optional): default ``<video_id>#<n>``, ``n`` = index among that video's rows;
- ``start``, ``end`` (optional, seconds): a clip of the video; empty = whole video; per video.

Other columns are ignored. Videos keep the order of their first defining row; captions file order.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from pipeline.data.importers.common import (
    CaptionEntry,
    ImportResult,
    Issues,
    VideoEntry,
    build_result,
    caption_text,
    decoded_lines,
    read_csv,
    require_file,
)
from pipeline.data.manifest import SPLITS
from pipeline.errors import InputError

REQUIRED = ("video_id", "path", "split", "text")


def _read_jsonl(path: Path, issues: Issues) -> list[tuple[int, dict[str, Any]]]:
    rows = []
    for line, raw in decoded_lines(path, issues):
        if not raw.strip():
            continue
        try:
            obj = json.loads(raw)
        except json.JSONDecodeError as exc:
            issues.report(f"malformed JSON: {exc.msg} (column {exc.colno})", file=path, line=line)
            continue
        if not isinstance(obj, dict):
            issues.report("expected a JSON object per line", file=path, line=line)
            continue
        missing = [name for name in ("video_id", "text") if name not in obj]
        if missing:
            issues.report(f"object lacks key(s) {missing}", file=path, line=line,
                          item_id=str(obj.get("video_id")) if "video_id" in obj else None)
            continue
        rows.append((line, obj))
    return rows


def _field(row: dict[str, Any], name: str) -> str:
    """A value as stripped text ('' for missing/null), so CSV and JSONL share one code path."""
    value = row.get(name)
    if value is None:
        return ""
    if isinstance(value, float) and math.isnan(value):
        return ""
    return str(value).strip()


def _seconds(value: str) -> float:
    if value == "":
        return math.nan
    seconds = float(value)  # ValueError handled by the caller
    if not math.isfinite(seconds) or seconds < 0:
        raise ValueError(value)
    return seconds


def _import_rows(
    path: Path, rows: list[tuple[int, dict[str, Any]]], issues: Issues, video_dir: Path | None,
) -> ImportResult:
    base = (video_dir if video_dir is not None else path.parent).resolve()
    definitions: dict[str, tuple[int, str, str, float, float]] = {}
    bad_rows: set[int] = set()
    for line, row in rows:
        video_id, raw_path = _field(row, "video_id"), _field(row, "path")
        split = _field(row, "split")
        if not raw_path and not split:
            continue  # caption-only row: the video is defined elsewhere
        try:
            start, end = _seconds(_field(row, "start")), _seconds(_field(row, "end"))
        except ValueError:
            issues.report("start/end must be non-negative seconds or empty", file=path,
                          line=line, item_id=video_id)
            bad_rows.add(line)
            continue
        if not (math.isnan(start) or math.isnan(end)) and end <= start:
            issues.report(f"end {end} is not after start {start}", file=path, line=line,
                          item_id=video_id)
            bad_rows.add(line)
            continue
        if not raw_path or split not in SPLITS:
            issues.report(f"needs both path and a split in {SPLITS} (got {split!r})",
                          file=path, line=line, item_id=video_id)
            bad_rows.add(line)
            continue
        definition = (line, raw_path, split, start, end)
        if video_id in definitions:
            first = definitions[video_id]
            if not _same_definition(first, definition):
                issues.report(f"path/split/start/end differ from line {first[0]}", file=path,
                              line=line, item_id=video_id)
                bad_rows.add(line)
            continue
        definitions[video_id] = definition

    videos: list[VideoEntry] = []
    missing: set[str] = set()
    for video_id, (line, raw_path, split, start, end) in definitions.items():
        file = Path(raw_path)
        file = file if file.is_absolute() else base / file
        if not file.is_file():
            issues.report(f"video file not found: {file}", file=path, line=line, item_id=video_id)
            missing.add(video_id)
            continue
        videos.append(VideoEntry(video_id, file.resolve(), split, start, end))

    captions: list[CaptionEntry] = []
    counts: dict[str, int] = {}
    seen: dict[str, int] = {}
    for line, row in rows:
        if line in bad_rows:
            continue
        video_id = _field(row, "video_id")
        n = counts.get(video_id, 0)
        counts[video_id] = n + 1
        caption_id = _field(row, "caption_id") or f"{video_id}#{n}"
        if caption_id in seen:
            issues.report(f"duplicate caption id (first on line {seen[caption_id]})", file=path,
                          line=line, item_id=caption_id)
            continue
        seen[caption_id] = line
        if video_id not in definitions:
            issues.report(f"caption refers to unknown video {video_id!r} (no row gives its "
                          "path and split)", file=path, line=line, item_id=caption_id)
            continue
        text = caption_text(row.get("text"), issues, file=path, line=line, item_id=caption_id)
        if text is None:
            issues.caption_skipped(video_id)
        elif video_id not in missing:
            captions.append(CaptionEntry(caption_id, video_id, text))
    return build_result(videos, captions, issues)


def _same_definition(a: tuple, b: tuple) -> bool:
    """Equal (path, split, start, end), treating NaN == NaN (tuples compare NaN as different)."""
    def norm(x: tuple) -> tuple:
        return tuple("nan" if isinstance(v, float) and math.isnan(v) else v for v in x[1:])
    return norm(a) == norm(b)


def import_csv(
    root: Path, *, video_dir: Path | None = None, skip_bad: bool = False,
) -> ImportResult:
    """ROOT is the CSV file itself (columns in the module docstring)."""
    issues = Issues(skip_bad)
    if root.is_dir():
        raise InputError("for format csv, ROOT must be the CSV file", file=root)
    rows = read_csv(require_file(root), issues, REQUIRED)
    return _import_rows(root, rows, issues, video_dir)


def import_jsonl(
    root: Path, *, video_dir: Path | None = None, skip_bad: bool = False,
) -> ImportResult:
    """ROOT is the JSON Lines file itself (keys as the CSV columns in the module docstring)."""
    issues = Issues(skip_bad)
    if root.is_dir():
        raise InputError("for format jsonl, ROOT must be the JSONL file", file=root)
    return _import_rows(root, _read_jsonl(require_file(root), issues), issues, video_dir)
