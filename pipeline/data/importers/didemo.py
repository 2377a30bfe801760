"""DiDeMo as video–paragraph retrieval: ``{split}_list.txt`` + ``{split}_data.json``.

Each video becomes ONE caption (id ``<video_id>#0``): all its moment descriptions (each stripped)
joined with single spaces in JSON order, clip [0, 31] s (the official loader computes moment
times and then overwrites them with this clip). Videos = list ∩ JSON ∩ files, in order of first
appearance in the JSON; unlike the official loader, a listed video without descriptions or file
is reported (or skipped and recorded with ``--skip-bad``), never dropped silently.
A file's key is its name minus its last 4 characters (``<id>.mp4`` -> ``<id>``).
"""

from __future__ import annotations

from pathlib import Path

from pipeline.data.importers.common import (
    CaptionEntry,
    ImportResult,
    Issues,
    VideoEntry,
    annotation_dir,
    build_result,
    caption_text,
    in_dir,
    index_video_files,
    pick_indexed_file,
    read_id_list,
    read_json,
    video_directory,
)
from pipeline.errors import InputError

SPLITS = ("train", "val", "test")
# The official paragraph clip: annotations were capped at 30 s, the loader uses [0, 31].
CLIP_START, CLIP_END = 0.0, 31.0


def import_didemo(
    root: Path,
    *,
    video_dir: Path | None = None,
    skip_bad: bool = False,
    annotations: Path | None = None,
) -> ImportResult:
    """DiDeMo paragraphs for train/val/test (see module docstring)."""
    issues = Issues(skip_bad)
    ann = annotation_dir(root, annotations)
    vdir = video_directory(root, video_dir)
    files = index_video_files(vdir, lambda name: name[:-4])

    videos: list[VideoEntry] = []
    captions: list[CaptionEntry] = []
    claimed: dict[str, tuple[Path, int]] = {}
    for split in SPLITS:
        list_path = in_dir(ann, f"{split}_list.txt")
        json_path = in_dir(ann, f"{split}_data.json")
        listed: dict[str, int] = {}
        for line, video_id in read_id_list(list_path, issues):
            if video_id in claimed:
                other, other_line = claimed[video_id]
                issues.report(f"video is also listed in {other}:{other_line}", file=list_path,
                              line=line, item_id=video_id)
                continue
            claimed[video_id] = (list_path, line)
            listed[video_id] = line
        data = read_json(json_path)
        if not isinstance(data, list):
            raise InputError("expected a JSON list of moment annotations", file=json_path)
        paragraphs: dict[str, list[str] | None] = {}  # None: a description was bad -> skip video
        for index, entry in enumerate(data):
            if not isinstance(entry, dict) or not isinstance(entry.get("video"), str):
                issues.report("annotation lacks a string 'video'", file=json_path,
                              item_id=f"[{index}]")
                continue
            video_id = entry["video"]
            if video_id not in listed:
                continue  # the JSON may annotate videos outside this split list
            parts = paragraphs.setdefault(video_id, [])
            if parts is None:
                continue
            text = caption_text(entry.get("description"), issues, file=json_path, line=None,
                                item_id=f"{video_id}#0")
            if text is None:
                paragraphs[video_id] = None  # never emit a paragraph with a missing moment
                continue
            parts.append(text)
        for video_id, line in listed.items():
            if video_id not in paragraphs:
                issues.report(f"video has no descriptions in {json_path.name}", file=list_path,
                              line=line, item_id=video_id)
        for video_id, parts in paragraphs.items():
            if parts is None:
                continue
            path = pick_indexed_file(files, video_id, video_id, issues, file=list_path,
                                     line=listed[video_id], video_dir=vdir)
            if path is None:
                continue
            videos.append(VideoEntry(video_id, path, split, CLIP_START, CLIP_END))
            captions.append(CaptionEntry(f"{video_id}#0", video_id, " ".join(parts)))
    return build_result(videos, captions, issues)
