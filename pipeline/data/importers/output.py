"""Writing an import: manifest (videos.csv, captions.csv) and, with --skip-bad, skipped.csv.

Video paths are stored **relative to the output directory** by default (``os.path.relpath``, so
``../datasets/msrvtt/VideoData/video1.mp4``): the manifest and the dataset can move together (a
DVC workspace, a clone on another machine) and :class:`Manifest` resolves relative paths against
its directory. ``absolute_paths=True`` stores absolute paths instead (manifest moved alone).
"""

from __future__ import annotations

import csv
import io
import os
from pathlib import Path

from pipeline.atomic import tmp_path_for
from pipeline.data.importers.common import SKIPPED_COLUMNS, SKIPPED_FILE, ImportResult, SkipRecord
from pipeline.data.manifest import CAPTIONS_FILE, VIDEOS_FILE, Manifest


def skipped_csv_bytes(records: list[SkipRecord]) -> bytes:
    """The skip list as CSV (file,line,id,reason); empty line/id fields when unknown."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(SKIPPED_COLUMNS)
    for record in records:
        writer.writerow([record.file, "" if record.line is None else record.line,
                         "" if record.id is None else record.id, record.reason])
    return buffer.getvalue().encode("utf-8")


def save_import(
    result: ImportResult, out_dir: str | Path, *, absolute_paths: bool = False,
    write_skipped: bool = False,
) -> Manifest:
    """Write the manifest (and skipped.csv when ``write_skipped``) all-or-nothing.

    Every file is first written under its ``.tmp`` name and only then moved into place, so a
    failure while writing leaves the previous outputs (or nothing) rather than a mix. Without
    ``write_skipped`` a stale skipped.csv from an earlier run is removed, because it would no
    longer describe this manifest.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    root = out_dir.resolve()
    videos = result.manifest.videos.copy()
    if not absolute_paths:
        videos["path"] = [os.path.relpath(Path(p).resolve(), root) for p in videos["path"]]
    manifest = Manifest(videos, result.manifest.captions.copy(), root)
    video_bytes, caption_bytes = manifest.to_bytes()
    outputs = {VIDEOS_FILE: video_bytes, CAPTIONS_FILE: caption_bytes}
    if write_skipped:
        outputs[SKIPPED_FILE] = skipped_csv_bytes(result.skipped)
    tmps = {name: tmp_path_for(out_dir / name) for name in outputs}
    try:
        for name, data in outputs.items():
            tmps[name].write_bytes(data)
    except BaseException:
        for tmp in tmps.values():
            tmp.unlink(missing_ok=True)
        raise
    for name, tmp in tmps.items():
        os.replace(tmp, out_dir / name)
    if not write_skipped:
        (out_dir / SKIPPED_FILE).unlink(missing_ok=True)
    return manifest
