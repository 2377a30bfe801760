"""One student training run as a stage: check caches, train in ``<out>.tmp``, publish ``<out>``.

Why a separate layer over :func:`pipeline.train.student.train_student`: the stage's contract is
about files (the cache compatibility check must happen *before* any training, the work directory
must survive a kill so a rerun resumes, and the final directory must appear atomically with only
the artifacts DVC tracks), while ``train_student`` is about the optimisation itself.

Output directory: ``model.pt`` (best validation epoch; ``extra`` records the caches' provenance and
the role ``student``/``baseline``), ``train_log.tsv``, ``val_log.tsv``, ``summary.json``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from pipeline.atomic import tmp_path_for
from pipeline.cache.reader import TeacherCache
from pipeline.data.manifest import Manifest
from pipeline.data.selection import select_split
from pipeline.distributed import DistInfo, barrier
from pipeline.errors import InputError
from pipeline.locks import output_lock
from pipeline.plateau import status_of
from pipeline.train.publish import publish_trained
from pipeline.train.setup import jsonable
from pipeline.train.student import StudentTrainConfig, train_student


@dataclass
class StudentRunResult:
    """What the CLI prints."""

    out_dir: Path
    best_epoch: int
    best_metrics: dict[str, float]
    resumed_from_epoch: int
    summary: dict[str, Any]


def open_caches(
    paths: Sequence[str | Path],
    *,
    manifest: Manifest,
    frames: Any,
    max_words: int,
    in_memory: bool = False,
) -> list[TeacherCache]:
    """Open each teacher cache and refuse any that was scored for another setup.

    Checked (MismatchError naming both values, their files and the fix): F, L, every train
    caption and video present, frames.h5 content digest, manifest digest; then every cache is
    re-read through its checksums and digests and refused if damaged or non-finite
    (CacheIntegrityError naming the cache and the row). All before any model is built.
    """
    selection = select_split(manifest, frames, "train")
    caption_ids, video_ids = list(selection.captions["caption_id"]), selection.video_ids
    caches = []
    for path in paths:
        cache = TeacherCache(path)
        cache.check_compatible(
            max_frames=int(frames.max_frames), max_words=max_words, caption_ids=caption_ids,
            video_ids=video_ids, frames_digest=str(frames.digest),
            manifest_digest=manifest.digest(), frames_path=getattr(frames, "path", None),
            manifest_path=manifest.root,
        )
        caches.append(cache)
    for cache in caches:
        cache.check_data()
        if in_memory:
            cache.load_all()
    return caches


def cache_provenance(cache: TeacherCache) -> dict[str, Any]:
    """What identifies a cache's soft labels (goes into the checkpoint and the fingerprint)."""
    return {"path": cache.path.name, "teacher_kind": str(cache.attrs.get("teacher_kind")),
            "checkpoint_sha256": str(cache.attrs.get("checkpoint_sha256"))}


def run_student(
    *,
    config: StudentTrainConfig,
    manifest: Manifest,
    frames: Any,
    cache_paths: Sequence[str | Path],
    out_dir: str | Path,
    device: torch.device,
    dist_info: DistInfo,
    eval_split: str = "val",
    name: str | None = None,
    on_progress: Callable[[int], None] | None = None,
) -> StudentRunResult:
    """Train one student (or the baseline when ``cache_paths`` is empty) into ``out_dir``.

    The work directory ``<out>.tmp`` holds the loop's resumable state; rerunning the same command
    after a kill continues from the last finished epoch (same settings required). Only rank 0
    writes files.
    """
    out = Path(out_dir)
    if config.loss_weights is not None and len(config.loss_weights) != 3:
        raise InputError(f"loss weights need 3 values (gt, coarse, fine), got "
                         f"{config.loss_weights}")
    if not config.relevance_temperature > 0:
        raise InputError(f"--relevance-temperature must be > 0, got "
                         f"{config.relevance_temperature}")
    caches = open_caches(cache_paths, manifest=manifest, frames=frames,
                         max_words=config.max_words, in_memory=config.in_memory)
    if caches and config.student.aggregation != "afa":
        raise InputError("distillation from teacher caches needs --aggregation afa "
                         "(the fine loss supervises the AFA frame weights)")
    if config.in_memory:
        frames.load_all()
    provenance = [cache_provenance(c) for c in caches]
    work = tmp_path_for(out)
    fingerprint = {"frames_digest": str(frames.digest), "manifest_digest": manifest.digest(),
                   "caches": provenance, "eval_split": eval_split}
    with output_lock(out, enabled=dist_info.is_main):
        student, result, summary = train_student(
            config=config, manifest=manifest, frames=frames, caches=caches, work_dir=work,
            device=device, dist_info=dist_info, eval_split=eval_split, fingerprint=fingerprint,
            on_progress=on_progress,
        )
        return _publish(out, work, student, result, summary, config, caches, provenance,
                        frames, manifest, dist_info, name)


def _publish(out: Path, work: Path, student: Any, result: Any, summary: dict[str, Any],
             config: StudentTrainConfig, caches: list[TeacherCache],
             provenance: list[dict[str, Any]], frames: Any, manifest: Manifest,
             dist_info: DistInfo, name: str | None) -> StudentRunResult:
    """Move the finished work directory onto ``out`` (rank 0) and describe the run."""
    role = "student" if caches else "baseline"
    full_summary = {
        "name": name or out.name,
        "role": role,
        "best_epoch": result.best_epoch,
        "best_metrics": result.best_metrics,
        "val_history": result.val_history,
        "steps": result.steps,
        **status_of(result.best_epoch, result.epochs_run, result.stopped_early,
                    config.patience, result.val_history, config.select_metric).as_summary(),
        "world_size": dist_info.world_size,
        "teachers": provenance,
        "frames_digest": str(frames.digest),
        "manifest_digest": manifest.digest(),
        "config": jsonable(asdict(config)),
        **summary,
    }
    if dist_info.is_main:
        publish_trained(work, out, summary=full_summary,
                        provenance={"role": role, "name": full_summary["name"],
                                    "teachers": provenance})
    barrier()
    del student
    return StudentRunResult(out, result.best_epoch, result.best_metrics,
                            result.resumed_from_epoch, full_summary)

