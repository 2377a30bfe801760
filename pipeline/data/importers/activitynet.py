"""ActivityNet Captions as video–paragraph retrieval.

``train_ids.json``/``train.json`` give the train split; ``val_ids.json``/``val_1.json`` give the
**test** split (the official setup evaluates on val_1 and also selects the checkpoint there, which
leaks). Our val split is instead a deterministic hold-out of train videos (``val_fraction``,
default 0.05, ranked by sha256 of the id; 0 reproduces the official train set).

One caption per video (id ``<pseudo_id>#0``): the sentences (each stripped) joined with " ",
clip [0, ceil(duration)] s. Video ids are the pseudo ids (``v_<ytid>``). A file's key is its name
without extension with the first 2 characters dropped, matched against ``pseudo_id[2:]``.
Duplicate ids in an ids file are reported (the official loader drops them silently).
"""

from __future__ import annotations

import math
from pathlib import Path

from pipeline.data.importers.common import (
    CaptionEntry,
    ImportResult,
    Issues,
    VideoEntry,
    annotation_dir,
    build_result,
    caption_text,
    hold_out_val,
    in_dir,
    index_video_files,
    pick_indexed_file,
    read_json,
    video_directory,
)
from pipeline.errors import InputError

SOURCES = (("train", "train_ids.json", "train.json"), ("test", "val_ids.json", "val_1.json"))
DEFAULT_VAL_FRACTION = 0.05


def _file_key(name: str) -> str:
    stem = name.rsplit(".", 1)[0] if "." in name else name
    return stem[2:]


def import_activitynet(
    root: Path,
    *,
    video_dir: Path | None = None,
    skip_bad: bool = False,
    annotations: Path | None = None,
    val_fraction: float | None = None,
) -> ImportResult:
    """ActivityNet paragraphs: train (minus a val hold-out) and val_1 as test."""
    issues = Issues(skip_bad)
    ann = annotation_dir(root, annotations)
    vdir = video_directory(root, video_dir)
    files = index_video_files(vdir, _file_key)
    fraction = DEFAULT_VAL_FRACTION if val_fraction is None else val_fraction

    videos: list[VideoEntry] = []
    captions: list[CaptionEntry] = []
    claimed: dict[str, tuple[str, Path]] = {}
    for split, ids_name, data_name in SOURCES:
        ids_path, data_path = in_dir(ann, ids_name), in_dir(ann, data_name)
        ids = read_json(ids_path)
        data = read_json(data_path)
        if not isinstance(ids, list):
            raise InputError("expected a JSON list of video ids", file=ids_path)
        if not isinstance(data, dict):
            raise InputError("expected a JSON object pseudo_id -> annotation", file=data_path)
        for index, video_id in enumerate(ids):
            if not isinstance(video_id, str) or not video_id.strip():
                issues.report("video id is not a non-empty string", file=ids_path,
                              item_id=f"[{index}]")
                continue
            if video_id in claimed:
                other_split, other = claimed[video_id]
                issues.report(f"duplicate id (already in {other_split} via {other.name})",
                              file=ids_path, item_id=video_id)
                continue
            claimed[video_id] = (split, ids_path)
            entry = data.get(video_id)
            if not isinstance(entry, dict):
                issues.report(f"video has no annotation in {data_name}", file=ids_path,
                              item_id=video_id)
                continue
            duration = entry.get("duration")
            if (not isinstance(duration, int | float) or isinstance(duration, bool)
                    or not math.isfinite(duration) or duration <= 0):
                issues.report(f"duration {duration!r} is not a positive number",
                              file=data_path, item_id=video_id)
                continue
            sentences = entry.get("sentences")
            if not isinstance(sentences, list) or not sentences:
                issues.report("annotation has no sentences list", file=data_path,
                              item_id=video_id)
                continue
            caption_id = f"{video_id}#0"
            parts = [caption_text(s, issues, file=data_path, line=None, item_id=caption_id)
                     for s in sentences]
            if any(part is None for part in parts):
                continue
            path = pick_indexed_file(files, video_id[2:], video_id, issues, file=ids_path,
                                     line=None, video_dir=vdir)
            if path is None:
                continue
            videos.append(VideoEntry(video_id, path, split, 0.0, float(math.ceil(duration))))
            captions.append(CaptionEntry(caption_id, video_id, " ".join(parts)))
    videos = hold_out_val(videos, fraction)
    return build_result(videos, captions, issues)
