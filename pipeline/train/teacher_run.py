"""A teacher training run as a stage: train in ``<out>.tmp`` (resumable), publish ``<out>``.

Why a layer over :func:`pipeline.train.teacher.train_teacher`: the stage's contract is about
files. Work happens in ``<out>.tmp`` (which survives a kill, so rerunning the same command
resumes from the loop's ``state.pt``), and only a finished directory is moved onto ``<out>``,
holding just what DVC tracks: ``model.pt``, ``train_log.tsv``, ``val_log.tsv``, ``summary.json``.
DVC deletes a stage's declared outputs before it runs, never ``<out>.tmp``, so resume also works
under ``dvc repro``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import torch

from pipeline.atomic import tmp_path_for
from pipeline.data.folds import check_fold, fold_model_dirs, without_fold
from pipeline.data.manifest import Manifest
from pipeline.distributed import DistInfo, barrier
from pipeline.locks import output_lock
from pipeline.models.checkpoint import MODEL_FILE
from pipeline.plateau import status_of
from pipeline.train.publish import publish_trained
from pipeline.train.setup import jsonable
from pipeline.train.teacher import TeacherTrainConfig, train_teacher


@dataclass
class TeacherTrainRun:
    """What the CLI prints after training."""

    out_dir: Path
    summary: dict[str, Any]


def run_teacher_train(
    *,
    config: TeacherTrainConfig,
    manifest: Manifest,
    frames: Any,
    out_dir: str | Path,
    device: torch.device,
    dist_info: DistInfo,
    eval_split: str = "val",
    name: str | None = None,
    on_progress: Callable[[int], None] | None = None,
) -> TeacherTrainRun:
    """Fine-tune a teacher into ``out_dir`` (model.pt = best validation epoch); rank 0 writes.

    A fold teacher (``config.folds`` >= 2) trains on the train videos outside ``config.fold``;
    the fingerprint and summary still name the whole manifest (the fold is in the config).
    """
    check_fold(config.folds, config.fold)
    training_manifest = (without_fold(manifest, config.folds, config.fold) if config.folds
                         else manifest)
    out = Path(out_dir)
    work = tmp_path_for(out)
    fingerprint = {"frames_digest": str(frames.digest), "manifest_digest": manifest.digest(),
                   "eval_split": eval_split}
    with output_lock(out, enabled=dist_info.is_main):
        teacher, result, info = train_teacher(
            config=config, manifest=training_manifest, frames=frames, work_dir=work,
            device=device,
            dist_info=dist_info, eval_split=eval_split, fingerprint=fingerprint,
            on_progress=on_progress,
        )
        return _publish(out, work, teacher, result, info, config, frames, manifest, dist_info,
                        name)


def _publish(out: Path, work: Path, teacher: Any, result: Any, info: dict[str, Any],
             config: TeacherTrainConfig, frames: Any, manifest: Manifest, dist_info: DistInfo,
             name: str | None) -> TeacherTrainRun:
    """Move the finished work directory onto ``out`` (rank 0) and describe the run."""
    summary: dict[str, Any] = {
        "name": name or out.name,
        "role": "teacher",
        "kind": config.kind,
        "source": "trained",
        "best_epoch": result.best_epoch,
        "best_metrics": result.best_metrics,
        "val_history": result.val_history,
        "steps": result.steps,
        **status_of(result.best_epoch, result.epochs_run, result.stopped_early,
                    config.patience, result.val_history, config.select_metric).as_summary(),
        "resumed_from_epoch": result.resumed_from_epoch,
        "world_size": dist_info.world_size,
        "frames_digest": str(frames.digest),
        "manifest_digest": manifest.digest(),
        "config": jsonable(asdict(config)),
        **info,
    }
    if dist_info.is_main:
        model = publish_trained(work, out, summary=summary,
                                provenance={"role": "teacher", "name": summary["name"],
                                            "folds": config.folds, "fold": config.fold})
        summary["official_masking"] = bool(getattr(model, "official_masking", False))
    barrier()
    del teacher
    return TeacherTrainRun(out, summary)


def run_cross_fitted_teacher_train(
    *,
    config: TeacherTrainConfig,
    cross_fit: int,
    manifest: Manifest,
    frames: Any,
    out_dir: str | Path,
    device: torch.device,
    dist_info: DistInfo,
    eval_split: str = "val",
    name: str | None = None,
    on_fold: Callable[[int], None] | None = None,
    on_progress: Callable[[int], None] | None = None,
) -> TeacherTrainRun:
    """The teacher on every train video plus ``cross_fit`` fold teachers, one output directory.

    The fold teachers train first, inside the work directory (``<out>.tmp/folds/k``, each
    resumable and kept once finished), then the teacher itself; the directory is published
    whole, so ``<out>`` never holds a teacher without its folds. ``on_fold(k)`` announces each
    fold (``k == cross_fit``: the teacher on every video).
    """
    check_fold(cross_fit, 0)
    if config.folds:
        raise ValueError("cross-fit the ordinary teacher: config.folds must be 0")
    out = Path(out_dir)
    work = tmp_path_for(out)
    for k, fold_dir in enumerate(fold_model_dirs(work, cross_fit)):
        if on_fold is not None:
            on_fold(k)
        if (fold_dir / MODEL_FILE).is_file():
            continue  # finished before a kill
        run_teacher_train(config=replace(config, folds=cross_fit, fold=k), manifest=manifest,
                          frames=frames, out_dir=fold_dir, device=device, dist_info=dist_info,
                          eval_split=eval_split, name=f"{name or out.name}_fold{k}",
                          on_progress=on_progress)
    if on_fold is not None:
        on_fold(cross_fit)
    return run_teacher_train(config=config, manifest=manifest, frames=frames, out_dir=out,
                             device=device, dist_info=dist_info, eval_split=eval_split,
                             name=name, on_progress=on_progress)
