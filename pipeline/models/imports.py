"""Publishing a released official checkpoint as one of our model directories.

Why: a lab that has the official X-CLIP / TS2-Net / X-Pool weights should score a cache from them
without training; ``summary.json`` records the source path and its sha256, so a cache scored from
the import can be traced back to the exact released file.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from pipeline.atomic import SUMMARY_FILE, publish_dir, sha256_file, tmp_path_for, write_json_atomic
from pipeline.errors import InputError
from pipeline.locks import output_lock
from pipeline.models.checkpoint import MODEL_FILE, import_official, save_model


def import_teacher(
    kind: str,
    checkpoint: str | Path,
    out_dir: str | Path,
    *,
    clip_source: str | None = None,
    max_words: int | None = None,
    max_frames: int | None = None,
    name: str | None = None,
    **options: Any,
) -> dict[str, Any]:
    """Convert a released official checkpoint into ``out_dir/model.pt`` (our format).

    ``summary.json`` records the source path and its sha256, so a cache scored from the import
    can be traced back to the exact released file.
    """
    checkpoint = Path(checkpoint)
    if not checkpoint.is_file():
        raise InputError("checkpoint not found", file=checkpoint)
    source_sha = sha256_file(checkpoint)
    teacher = import_official(kind, checkpoint, clip_source=clip_source, max_words=max_words,
                              max_frames=max_frames, **options)
    out = Path(out_dir)
    work = tmp_path_for(out)
    with output_lock(out):  # another import into the same --out would share (and delete) work
        if work.exists():
            shutil.rmtree(work)
        work.mkdir(parents=True)
        return _write(teacher, work, out, checkpoint, source_sha, name)


def _write(teacher: Any, work: Path, out: Path, checkpoint: Path, source_sha: str,
           name: str | None) -> dict[str, Any]:
    """model.pt and summary.json in ``work``, then published as ``out``; returns the summary."""
    provenance = {"source_path": str(checkpoint), "source_sha256": source_sha}
    save_model(work / MODEL_FILE, teacher,
               extra={"role": "teacher", "name": name or out.name, "imported": provenance})
    summary = {
        "name": name or out.name,
        "role": "teacher",
        "kind": teacher.kind,
        "source": "imported",
        **provenance,
        "official_masking": bool(getattr(teacher, "official_masking", False)),
        "max_words": int(teacher.max_words),
        "max_frames": int(teacher.max_frames),
        "config": teacher.config_dict(),
        "model_sha256": sha256_file(work / MODEL_FILE),
    }
    write_json_atomic(work / SUMMARY_FILE, summary)
    publish_dir(work, out)
    return summary
