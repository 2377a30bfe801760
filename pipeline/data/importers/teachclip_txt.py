"""TeachCLIP's inference text files: ``VideoSet/``, ``QuerySet/`` and ``Annotations/<gt>.txt``.

Each ``(split, video_set, query_set, ground_truth)`` tuple populates one split. Caption ids are the
query ids (whitespace-free, as the bigfile tools require); captions are ordered by first appearance
in the ground truth and attached to their video by id, so non-contiguous ground-truth lines are
fine here (the official code needs contiguous runs). Videos keep VideoSet order; a video without
queries is allowed (a gallery distractor).

Video path: ``VideoData/<id>`` if it exists, else ``<id>.mp4``, else ``<id>.avi`` (the official
"bare name" fallback would only fail later at decode, so a missing file is reported here). If
``didemo`` occurs in the VideoSet path from the collection directory down (``<ROOT name>/VideoSet/
<set>.txt``), the set's videos get the clip [0, 31] s.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from pipeline.data.importers.common import (
    CaptionEntry,
    ImportResult,
    Issues,
    VideoEntry,
    build_result,
    caption_text,
    decoded_lines,
    find_by_candidates,
    read_id_list,
    video_directory,
)
from pipeline.data.manifest import SPLITS
from pipeline.errors import InputError

VIDEO_SUFFIXES = ("", ".mp4", ".avi")
DIDEMO_CLIP = (0.0, 31.0)


def _txt(directory: Path, name: str) -> Path:
    """``directory/<name>`` with ``.txt`` appended unless the name already has it."""
    return directory / (name if name.endswith(".txt") else f"{name}.txt")


def _first_field(text: str) -> str | None:
    """The id at the start of a tab-separated line (for messages about undecodable lines)."""
    return text.strip().split("\t", 1)[0] or None


def _read_queries(path: Path, issues: Issues) -> tuple[dict[str, tuple[int, str]], set[str]]:
    """``query_id -> (line, text)`` and the ids whose line was bad (already reported)."""
    queries: dict[str, tuple[int, str]] = {}
    bad: set[str] = set()
    for line, raw in decoded_lines(path, issues, _first_field):
        stripped = raw.strip()
        if not stripped:
            continue
        if "\t" not in stripped:
            # A tab that strip() removed means the sentence itself is blank.
            message = ("empty caption" if "\t" in raw
                       else "expected '<query_id>\\t<sentence>' (no tab)")
            issues.report(message, file=path, line=line, item_id=stripped.split()[0])
            if "\t" in raw:
                bad.add(stripped.split()[0])
            continue
        query_id, sentence = stripped.split("\t", 1)
        if not query_id or any(ch.isspace() for ch in query_id):
            issues.report("query id is empty or contains whitespace", file=path, line=line,
                          item_id=query_id)
            continue
        if query_id in queries:
            issues.report(f"duplicate id (first on line {queries[query_id][0]})", file=path,
                          line=line, item_id=query_id)
            continue
        text = caption_text(sentence, issues, file=path, line=line, item_id=query_id)
        if text is None:
            bad.add(query_id)
            continue
        queries[query_id] = (line, text)
    return queries, bad


def import_teachclip_txt(
    root: Path,
    *,
    video_dir: Path | None = None,
    skip_bad: bool = False,
    sets: Sequence[tuple[str, str, str, str]] = (),
) -> ImportResult:
    """Import ``(split, video_set, query_set, ground_truth)`` tuples (names without ``.txt`` ok).

    Example: ``sets=[("test", "msrvtt1k-test", "msrvtt1k-test-query", "msrvtt1k-gt")]``.
    """
    if not sets:
        raise InputError("teachclip-txt needs at least one set: (split, VideoSet, QuerySet, gt)")
    issues = Issues(skip_bad)
    vdir = video_directory(root, video_dir)
    videos: list[VideoEntry] = []
    captions: list[CaptionEntry] = []
    claimed: dict[str, tuple[Path, int]] = {}
    used_queries: dict[str, Path] = {}  # query ids must be unique across all sets
    for split, video_set, query_set, ground_truth in sets:
        if split not in SPLITS:
            raise InputError(f"split {split!r} is not one of {SPLITS}")
        set_path = _txt(root / "VideoSet", video_set)
        query_path = _txt(root / "QuerySet", query_set)
        gt_path = _txt(root / "Annotations", ground_truth)
        # Official rule: "didemo" anywhere in the VideoSet path. Only the part from the collection
        # directory (ROOT's name) down is checked, so an unrelated parent folder cannot trigger it.
        local = Path(root.resolve().name) / set_path.relative_to(root)
        clip = DIDEMO_CLIP if "didemo" in str(local) else (float("nan"), float("nan"))
        listed: set[str] = set()
        for line, video_id in read_id_list(set_path, issues):
            if video_id in claimed:
                other, other_line = claimed[video_id]
                issues.report(f"video is also in {other}:{other_line}", file=set_path,
                              line=line, item_id=video_id)
                continue
            claimed[video_id] = (set_path, line)
            listed.add(video_id)
            path = find_by_candidates(vdir, video_id, VIDEO_SUFFIXES)
            if path is None:
                issues.report(f"video file not found in {vdir} (tried bare name, .mp4, .avi)",
                              file=set_path, line=line, item_id=video_id)
                continue
            videos.append(VideoEntry(video_id, path, split, *clip))

        queries, bad_queries = _read_queries(query_path, issues)
        assigned: dict[str, int] = {}
        for line, raw in decoded_lines(gt_path, issues, _first_field):
            stripped = raw.strip()
            if not stripped:
                continue
            fields = stripped.split("\t")
            if len(fields) != 2:
                issues.report(f"expected 2 tab-separated fields, found {len(fields)}",
                              file=gt_path, line=line, item_id=fields[0])
                continue
            query_id, video_id = fields[0].strip(), fields[1].strip()
            if query_id in assigned:
                issues.report(f"duplicate id (first on line {assigned[query_id]})",
                              file=gt_path, line=line, item_id=query_id)
                continue
            assigned[query_id] = line
            if query_id in used_queries:
                issues.report(f"duplicate id (also in {used_queries[query_id]})", file=gt_path,
                              line=line, item_id=query_id)
                continue
            used_queries[query_id] = gt_path
            if query_id in bad_queries:
                issues.caption_skipped(video_id)
                continue  # its sentence was already reported and skipped
            if query_id not in queries:
                issues.report(f"query id not in {query_path}", file=gt_path, line=line,
                              item_id=query_id)
                continue
            if video_id not in listed:
                issues.report(f"caption refers to unknown video {video_id!r} (not in "
                              f"{set_path.name})", file=gt_path, line=line, item_id=query_id)
                continue
            captions.append(CaptionEntry(query_id, video_id, queries[query_id][1]))
        for query_id, (line, _text) in queries.items():
            if query_id not in assigned:
                issues.report(f"query has no ground-truth video in {gt_path.name}",
                              file=query_path, line=line, item_id=query_id)
    return build_result(videos, captions, issues)
