"""Shared building blocks of the dataset importers: line-aware readers, the skip policy, records.

Why one module: every format has the same failure modes (missing files, non-UTF-8 bytes, ragged
CSV rows, malformed JSON, duplicate ids, empty captions) and the user must get the same kind of
message for each: file, 1-based line where a line means something, and the offending id. The
``Issues`` collector is the single place that decides between "raise" (default) and "skip and
record" (``--skip-bad``), so an importer never has two code paths for the same problem.
"""

from __future__ import annotations

import csv
import hashlib
import json
import math
import os
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import pandas as pd

from pipeline.data.manifest import CAPTION_COLUMNS, VIDEO_COLUMNS, Manifest
from pipeline.errors import InputError

SKIPPED_FILE = "skipped.csv"
SKIPPED_COLUMNS = ["file", "line", "id", "reason"]


@dataclass(frozen=True)
class SkipRecord:
    """One item left out under ``--skip-bad``: where it came from and why."""

    file: str
    line: int | None
    id: str | None
    reason: str


@dataclass
class ImportResult:
    """What every importer returns: the manifest (absolute video paths) and what it skipped."""

    manifest: Manifest
    skipped: list[SkipRecord] = field(default_factory=list)


@dataclass
class VideoEntry:
    """A video as an importer collects it, before it becomes a manifest row."""

    video_id: str
    path: Path
    split: str
    start: float = math.nan
    end: float = math.nan


@dataclass
class CaptionEntry:
    """A caption as an importer collects it; its split is copied from the video when building."""

    caption_id: str
    video_id: str
    text: str


class Issues:
    """Raise on bad input, or record it and let the caller skip the item (``--skip-bad``).

    Callers write ``issues.report(...); continue``: when skipping is off ``report`` raises, so the
    ``continue`` is only reached in skip mode.
    """

    def __init__(self, skip_bad: bool) -> None:
        self.skip_bad = skip_bad
        self.records: list[SkipRecord] = []
        #: Videos one of whose captions was skipped (build_result drops those left with none).
        self.lost_captions: set[str] = set()

    def caption_skipped(self, video_id: str) -> None:
        """Note that a caption of ``video_id`` was left out (called right after its report)."""
        self.lost_captions.add(video_id)

    def report(
        self,
        message: str,
        *,
        file: str | Path | None = None,
        line: int | None = None,
        item_id: str | None = None,
    ) -> None:
        if not self.skip_bad:
            raise InputError(message, file=file, line=line, item_id=item_id)
        self.records.append(
            SkipRecord(str(file) if file is not None else "", line, item_id, message)
        )


# ---------------------------------------------------------------------------- locating files
def annotation_dir(root: Path, annotations: Path | None) -> Path:
    """Annotation directory: the option, else ``ROOT/Annotations`` if present, else ROOT.

    The TeachCLIP layout keeps annotations in ``data/datasets/<ds>/Annotations`` while the
    CLIP4Clip releases put them directly in the data path; accepting both avoids a flag for the
    common cases.
    """
    if annotations is not None:
        directory = annotations if annotations.is_absolute() else root / annotations
    elif (root / "Annotations").is_dir():
        directory = root / "Annotations"
    else:
        directory = root
    if not directory.is_dir():
        raise InputError("annotation directory not found", file=directory)
    return directory


def video_directory(root: Path, video_dir: Path | None) -> Path:
    """The video directory: ``--video-dir`` (relative to the CWD) or ``ROOT/VideoData``."""
    directory = root / "VideoData" if video_dir is None else video_dir
    if not directory.is_dir():
        raise InputError("video directory not found", file=directory)
    return directory.resolve()


def in_dir(directory: Path, name: str | Path) -> Path:
    """``name`` as given if absolute, else inside ``directory``."""
    name = Path(name)
    return name if name.is_absolute() else directory / name


def require_file(path: Path) -> Path:
    """Fail (always, even with --skip-bad) when an annotation file is missing: nothing to skip."""
    if not path.is_file():
        raise InputError("file not found", file=path)
    return path


def find_by_candidates(video_dir: Path, video_id: str, suffixes: Iterable[str]) -> Path | None:
    """First existing ``video_dir/<id><suffix>``, in the given order (``""`` = the bare id)."""
    for suffix in suffixes:
        candidate = video_dir / f"{video_id}{suffix}"
        if candidate.is_file():
            return candidate.resolve()
    return None


def index_video_files(
    video_dir: Path, key_of: Callable[[str], str]
) -> dict[str, list[Path]]:
    """Walk ``video_dir`` (recursively, sorted, hidden files ignored) and group files by key.

    Several files per key are kept so the caller can report the ambiguity for the ids it
    actually uses instead of silently letting the last one win (as the official walk does).
    """
    found: dict[str, list[Path]] = {}
    for dirpath, dirnames, filenames in os.walk(video_dir):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in sorted(filenames):
            if name.startswith("."):
                continue
            key = key_of(name)
            if key:
                found.setdefault(key, []).append((Path(dirpath) / name).resolve())
    return found


def pick_indexed_file(
    files: dict[str, list[Path]], key: str, video_id: str, issues: Issues, *,
    file: Path, line: int | None, video_dir: Path,
) -> Path | None:
    """The one file for ``key``; reports a missing or ambiguous file (returns None when skipped)."""
    candidates = files.get(key, [])
    if not candidates:
        issues.report(f"video file not found under {video_dir}", file=file, line=line,
                      item_id=video_id)
        return None
    if len(candidates) > 1:
        names = ", ".join(str(p) for p in candidates)
        issues.report(f"several video files match: {names}", file=file, line=line,
                      item_id=video_id)
        return None
    return candidates[0]


# ---------------------------------------------------------------------------- readers
def decoded_lines(
    path: Path, issues: Issues, id_of: Callable[[str], str | None] | None = None
) -> Iterator[tuple[int, str]]:
    """Yield ``(line_number, text)`` of a UTF-8 file, reporting each undecodable line.

    Decoding line by line (rather than the whole file) is what lets ``--skip-bad`` drop a single
    bad caption and lets the error name the exact line. ``id_of`` extracts the item id from the
    line decoded with replacement characters, so the message can also name the id. A leading
    BOM is removed.
    """
    data = require_file(path).read_bytes()
    for number, raw in enumerate(data.splitlines(keepends=True), start=1):
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            hint = raw.decode("utf-8", errors="replace")
            issues.report(f"not valid UTF-8 (byte {exc.start} of the line)", file=path,
                          line=number, item_id=id_of(hint) if id_of else None)
            continue
        if number == 1:
            text = text.lstrip("\ufeff")
        yield number, text


def read_id_list(path: Path, issues: Issues) -> list[tuple[int, str]]:
    """Non-blank stripped lines of an id list with their line numbers; duplicates reported."""
    seen: dict[str, int] = {}
    out: list[tuple[int, str]] = []
    for number, text in decoded_lines(path, issues, lambda hint: hint.strip() or None):
        item = text.strip()
        if not item:
            continue
        if item in seen:
            issues.report(f"duplicate id (first on line {seen[item]})", file=path, line=number,
                          item_id=item)
            continue
        seen[item] = number
        out.append((number, item))
    return out


def read_json(path: Path) -> Any:
    """Parse a JSON file; malformed JSON or bad UTF-8 always raises (the file cannot be skipped)."""
    data = require_file(path).read_bytes()
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise InputError("not valid UTF-8", file=path, line=line) from exc
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise InputError(f"malformed JSON: {exc.msg} (column {exc.colno})", file=path,
                         line=exc.lineno) from exc


def read_csv(
    path: Path, issues: Issues, required: Iterable[str], id_column: str = "video_id"
) -> list[tuple[int, dict[str, str]]]:
    """Rows of a headed CSV as ``(first_line_number, {column: value})``.

    Ragged rows (a field count different from the header) are reported rather than padded,
    because pandas would silently shift or NaN-fill them.
    """
    state: dict[str, int | None] = {"start": None}
    header: list[str] | None = None

    def id_hint(text: str) -> str | None:
        if header is None or id_column not in header:
            return None
        fields = next(csv.reader([text]), [])
        index = header.index(id_column)
        return fields[index].strip() if index < len(fields) else None

    def feed() -> Iterator[str]:
        for number, text in decoded_lines(path, issues, id_hint):
            if state["start"] is None:
                state["start"] = number
            yield text

    reader = csv.reader(feed())
    rows: list[tuple[int, dict[str, str]]] = []
    while True:
        state["start"] = None
        try:
            fields = next(reader)
        except StopIteration:
            break
        except csv.Error as exc:
            raise InputError(f"malformed CSV: {exc}", file=path, line=state["start"]) from exc
        line = state["start"]
        if not fields or (len(fields) == 1 and not fields[0].strip()):
            continue
        if header is None:
            header = [name.strip() for name in fields]
            missing = [name for name in required if name not in header]
            if missing:
                raise InputError(f"CSV header lacks column(s) {missing}; found {header}",
                                 file=path, line=line)
            continue
        if len(fields) != len(header):
            ident = None
            if id_column in header and header.index(id_column) < len(fields):
                ident = fields[header.index(id_column)]
            issues.report(f"ragged CSV row: {len(fields)} fields, header has {len(header)}",
                          file=path, line=line, item_id=ident)
            continue
        rows.append((line, dict(zip(header, fields, strict=True))))
    if header is None:
        raise InputError("empty CSV (no header)", file=path)
    return rows


def caption_text(
    value: Any, issues: Issues, *, file: Path, line: int | None, item_id: str
) -> str | None:
    """A caption's text stripped, or None (after reporting) when it is not a non-empty string."""
    if not isinstance(value, str):
        issues.report(f"caption is {type(value).__name__}, expected a string", file=file,
                      line=line, item_id=item_id)
        return None
    text = value.strip()
    if not text:
        issues.report("empty caption", file=file, line=line, item_id=item_id)
        return None
    return text


# ---------------------------------------------------------------------------- assembling
def hold_out_val(videos: list[VideoEntry], fraction: float) -> list[VideoEntry]:
    """Move a deterministic ``fraction`` of train videos to ``val``.

    Why: model selection on the test split leaks (msrvtt-9k and ActivityNet do it officially).
    Videos are ranked by sha256 of their id, so the choice does not depend on file order and a
    video keeps its split when others are added or removed.
    """
    if not 0.0 <= fraction < 1.0:
        raise InputError(f"val fraction must be in [0, 1), got {fraction}")
    train = [v.video_id for v in videos if v.split == "train"]
    count = round(fraction * len(train))
    if fraction > 0 and count == 0 and len(train) > 1:
        count = 1
    ranked = sorted(train, key=lambda vid: hashlib.sha256(vid.encode("utf-8")).hexdigest())
    chosen = set(ranked[:count])
    return [replace(v, split="val") if v.video_id in chosen else v for v in videos]


def drop_captionless(
    videos: list[VideoEntry], captions: list[CaptionEntry], issues: Issues,
    sources: dict[str, tuple[Path, int | None]],
) -> list[VideoEntry]:
    """Report (and in skip mode drop) videos left with no caption.

    A training/eval video without any text is useless and usually means the annotation files
    disagree (wrong split list, or all its captions were skipped), so it is an input problem.
    ``sources`` maps a video id to the (file, line) that introduced it, for the message.
    """
    with_text = {c.video_id for c in captions}
    kept = []
    for video in videos:
        if video.video_id not in with_text:
            file, line = sources.get(video.video_id, (None, None))
            issues.report("video has no captions", file=file, line=line,
                          item_id=video.video_id)
            continue
        kept.append(video)
    return kept


def build_result(
    videos: list[VideoEntry], captions: list[CaptionEntry], issues: Issues
) -> ImportResult:
    """Assemble the manifest (captions of dropped videos vanish, split copied from the video).

    A video whose captions were all skipped (e.g. its only caption was empty) is skipped too,
    and recorded: kept, it would be a training video with no text, or a retrieval target whose
    query silently vanished. (A video that never had a caption, e.g. a distractor of a
    teachclip-txt VideoSet, is the format's business and stays.)
    """
    with_text = {c.video_id for c in captions}
    kept = []
    for video in videos:
        if video.video_id in issues.lost_captions and video.video_id not in with_text:
            issues.report("video has no caption left: all of its captions were bad and skipped",
                          file=str(video.path), item_id=video.video_id)
            continue
        kept.append(video)
    videos = kept
    split_of = {v.video_id: v.split for v in videos}
    video_frame = pd.DataFrame(
        [[v.video_id, str(v.path), v.split, v.start, v.end] for v in videos],
        columns=VIDEO_COLUMNS,
    )
    caption_frame = pd.DataFrame(
        [[c.caption_id, c.video_id, split_of[c.video_id], c.text]
         for c in captions if c.video_id in split_of],
        columns=CAPTION_COLUMNS,
    )
    return ImportResult(Manifest(video_frame, caption_frame), list(issues.records))
