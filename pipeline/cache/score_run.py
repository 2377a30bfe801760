"""Teacher scoring as a stage: score into ``<out>.tmp`` (resumable by row block), publish ``<out>``.

Layout: ``cache.h5`` (+ ``cache.shard-RRR-of-WWW.h5`` when scored by several processes;
``cache.h5`` then references them), ``metrics.json`` (the teacher's numbers on the test split),
``metrics.provenance.json`` (what they were measured on) and ``summary.json``. Rerunning after
a kill resumes the pending row blocks.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch

from pipeline.atomic import SUMMARY_FILE, publish_dir, sha256_file, tmp_path_for, write_json_atomic
from pipeline.cache.score import (
    ScoreResult,
    cache_meta,
    score_teacher,
    shard_files,
    teacher_test_metrics,
    write_metrics,
)
from pipeline.data.folds import train_folds
from pipeline.data.manifest import Manifest
from pipeline.distributed import DistInfo, barrier
from pipeline.errors import InputError
from pipeline.eval.metrics_file import provenance_path
from pipeline.eval.model_eval import training_seed
from pipeline.locks import output_lock
from pipeline.models.checkpoint import load_model, resolve_model_path
from pipeline.models.teachers.base import DEFAULT_CHUNK_PAIRS, Teacher
from pipeline.models.tokenizer import ClipTokenizer
from pipeline.precision import autocast_context

CACHE_FILE = "cache.h5"
METRICS_FILE = "metrics.json"


def load_teacher(model: str | Path, device: torch.device
                 ) -> tuple[Teacher, Path, str, int | None]:
    """(teacher in eval mode on ``device``, checkpoint file, its sha256, its training seed or
    None when imported) from a dir or file."""
    teacher, path, sha, extra = _load_teacher_extra(model, device)
    return teacher, path, sha, training_seed(extra)


def _load_teacher_extra(model: str | Path, device: torch.device
                        ) -> tuple[Teacher, Path, str, dict[str, Any]]:
    path = resolve_model_path(model)
    loaded, extra = load_model(path)
    if not isinstance(loaded, Teacher):
        raise InputError(f"checkpoint holds a {loaded.kind!r} model, not a teacher", file=path)
    return loaded.to(device).eval(), path, sha256_file(path), dict(extra or {})


def load_fold_teachers(models: Sequence[str | Path], teacher: Teacher, manifest: Manifest,
                       split: str, device: torch.device) -> tuple[list[Teacher], list[str]]:
    """The K fold teachers of a cross-fitted cache, in fold order, checked against each other.

    Each checkpoint must say (``teacher train --folds K --fold k``) that it is fold k of K, with
    K = the number given, the same kind, L and F as ``teacher``; cross-fitting scores the train
    split only (the folds are over train videos).
    """
    if split != "train":
        raise InputError(f"--fold-model cross-fits the train split's soft labels; got --split "
                         f"{split!r}")
    if len(models) < 2:
        raise InputError(f"cross-fitting needs K >= 2 fold teachers, got {len(models)} "
                         "--fold-model")
    teachers, shas = [], []
    for k, model in enumerate(models):
        fold_teacher, path, sha, extra = _load_teacher_extra(model, device)
        where = (int(extra.get("folds", 0) or 0), int(extra.get("fold", 0) or 0))
        if where != (len(models), k):
            raise InputError(
                f"--fold-model number {k + 1} is fold {where[1]} of {where[0]} (0 = not a fold "
                f"teacher), expected fold {k} of {len(models)}: give the fold models in fold "
                f"order, trained with `teacher train --folds {len(models)} --fold {k}`", file=path)
        for what, mine, theirs in (("kind", fold_teacher.kind, teacher.kind),
                                   ("max_words (L)", fold_teacher.max_words, teacher.max_words),
                                   ("max_frames (F)", fold_teacher.max_frames,
                                    teacher.max_frames)):
            if mine != theirs:
                raise InputError(f"fold teacher {k} has {what} {mine!r}, the teacher "
                                 f"{theirs!r}: train every fold like the teacher", file=path)
        teachers.append(fold_teacher)
        shas.append(sha)
    return teachers, shas


@dataclass
class TeacherScoreRun:
    """What the CLI prints after scoring (``metrics`` only on rank 0)."""

    out_dir: Path
    result: ScoreResult
    metrics: dict[str, Any] | None
    cache_bytes: int


def run_teacher_score(
    *,
    model: str | Path,
    manifest: Manifest,
    frames: Any,
    out_dir: str | Path,
    device: torch.device,
    dist_info: DistInfo,
    name: str | None = None,
    split: str = "train",
    metrics_split: str = "test",
    batch_size: int = 64,
    block_rows: int | None = None,
    chunk_pairs: int = DEFAULT_CHUNK_PAIRS,
    amp: str = "none",
    on_start: Callable[[int], None] | None = None,
    on_progress: Callable[[int], None] | None = None,
    fold_models: Sequence[str | Path] = (),
) -> TeacherScoreRun:
    """Score ``split`` into ``out_dir/cache.h5`` and measure the teacher on ``metrics_split``.

    Rerunning after a kill resumes the pending row blocks (a tmp file from another checkpoint or
    other inputs is discarded: its provenance attributes differ). ``metrics_split=""`` skips the
    metrics. Under torchrun every rank scores its blocks; rank 0 merges, measures and publishes.
    ``fold_models`` (K fold teachers, fold order) cross-fit the soft labels: each caption is
    scored by the fold teacher that never saw its video (:mod:`pipeline.data.folds`); the
    teacher's own metrics still come from ``model``.
    """
    out = Path(out_dir)
    work = tmp_path_for(out)
    teacher, ckpt, ckpt_sha, seed = load_teacher(model, device)
    meta = cache_meta(teacher, checkpoint_sha256=ckpt_sha, frames=frames, manifest=manifest)
    fold_teachers: list[Teacher] = []
    video_fold = None
    if fold_models:
        fold_teachers, fold_shas = load_fold_teachers(fold_models, teacher, manifest, split,
                                                      device)
        meta = replace(meta, cross_fit_folds=len(fold_teachers),
                       fold_checkpoints_sha256=",".join(fold_shas))
        video_fold = train_folds(manifest, len(fold_teachers))
    tokenizer = ClipTokenizer.default()
    autocast = (lambda: autocast_context(device, amp)) if amp != "none" else None
    with output_lock(out, enabled=dist_info.is_main):
        result = score_teacher(
            teacher, frames, manifest, out_path=work / CACHE_FILE, meta=meta,
            tokenizer=tokenizer, device=device, split=split, batch_size=batch_size,
            block_rows=block_rows, chunk_pairs=chunk_pairs, rank=dist_info.rank,
            world=dist_info.world_size, autocast=autocast, on_mismatch="restart",
            on_start=on_start, on_progress=on_progress, fold_teachers=fold_teachers,
            video_fold=video_fold,
        )
        return _finish(out, work, teacher, ckpt, ckpt_sha, result, frames, manifest, dist_info,
                       name, split, metrics_split, tokenizer, device, batch_size, autocast,
                       seed)


def _finish(out: Path, work: Path, teacher: Teacher, ckpt: Path, ckpt_sha: str,
            result: ScoreResult, frames: Any, manifest: Manifest, dist_info: DistInfo,
            name: str | None, split: str, metrics_split: str, tokenizer: ClipTokenizer,
            device: torch.device, batch_size: int, autocast: Any,
            seed: int | None = None) -> TeacherScoreRun:
    """Rank 0: the teacher's own metrics, summary.json, stale files out, publish ``out``."""
    metrics = None
    cache_bytes = 0
    if dist_info.is_main:
        if metrics_split:
            metrics = teacher_test_metrics(
                teacher, frames, manifest, tokenizer=tokenizer, device=device,
                split=metrics_split, batch_size=batch_size, autocast=autocast,
                name=name or out.name, checkpoint_sha256=ckpt_sha, model_path=ckpt,
                seed=seed,
            )
            write_metrics(work / METRICS_FILE, metrics)
        keep = {CACHE_FILE, METRICS_FILE, provenance_path(METRICS_FILE).name, SUMMARY_FILE}
        keep |= {p.name for p in shard_files(work / CACHE_FILE, dist_info.world_size)}
        # Stale files, e.g. shards of an earlier run with another world size, and the lock files
        # of the writers inside ``work`` (safe to delete: every writer there is done, and no one
        # else can open one while this rank holds the lock of ``out`` itself).
        for stale in work.iterdir():
            if stale.name not in keep:
                shutil.rmtree(stale) if stale.is_dir() else stale.unlink()
        cache_bytes = sum(p.stat().st_size for p in work.iterdir() if p.suffix == ".h5")
        write_json_atomic(work / SUMMARY_FILE, {
            "name": name or out.name,
            "teacher_kind": teacher.kind,
            "checkpoint": ckpt.name,
            "checkpoint_sha256": ckpt_sha,
            "split": split,
            "n_captions": result.n_captions,
            "n_videos": result.n_videos,
            "world_size": dist_info.world_size,
            "cache_bytes": cache_bytes,
            "bytes_per_caption": cache_bytes / max(1, result.n_captions),
        })
        publish_dir(work, out)
    barrier()
    return TeacherScoreRun(out, result, metrics, cache_bytes)
