"""Teacher stages as directories: train, import and score, each published atomically.

Why a layer over :mod:`pipeline.train.teacher` / :mod:`pipeline.cache.score`: the stages'
contract is about files. Work happens in ``<out>.tmp`` (which survives a kill, so rerunning the
same command resumes: the training loop's ``state.pt``, the cache writer's row blocks), and only a
finished directory is moved onto ``<out>``, holding just what DVC tracks. DVC deletes a stage's
declared outputs before it runs, never ``<out>.tmp``, so resume also works under ``dvc repro``.

Layouts: train/import → ``model.pt`` (+ ``train_log.tsv``, ``val_log.tsv`` when trained) and
``summary.json``; score → ``cache.h5`` (+ ``cache.shard-RRR-of-WWW.h5`` when scored by several
processes; ``cache.h5`` then references them), ``metrics.json``, ``summary.json``.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from pipeline.atomic import publish_dir, sha256_file, tmp_path_for, write_text_atomic
from pipeline.cache.score import (
    ScoreResult,
    cache_meta,
    score_teacher,
    shard_files,
    teacher_test_metrics,
    write_metrics,
)
from pipeline.data.manifest import Manifest
from pipeline.distributed import DistInfo, barrier
from pipeline.errors import InputError
from pipeline.models.checkpoint import import_official, load_model, save_model
from pipeline.models.teachers.base import DEFAULT_CHUNK_PAIRS, Teacher
from pipeline.models.tokenizer import ClipTokenizer
from pipeline.train.loop import STATE_FILE, TRAIN_LOG, VAL_LOG, autocast_context
from pipeline.train.teacher import TeacherTrainConfig, train_teacher

MODEL_FILE = "model.pt"
SUMMARY_FILE = "summary.json"
CACHE_FILE = "cache.h5"
METRICS_FILE = "metrics.json"
BEST_FILE = "best.pt"


def _write_summary(path: Path, summary: Mapping[str, Any]) -> None:
    write_text_atomic(path, json.dumps(summary, indent=2, sort_keys=True, default=str) + "\n")


# ---------------------------------------------------------------------------------- train
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
    """Fine-tune a teacher into ``out_dir`` (model.pt = best validation epoch); rank 0 writes."""
    out = Path(out_dir)
    work = tmp_path_for(out)
    fingerprint = {"frames_digest": str(frames.digest), "manifest_digest": manifest.digest(),
                   "eval_split": eval_split}
    teacher, result, info = train_teacher(
        config=config, manifest=manifest, frames=frames, work_dir=work, device=device,
        dist_info=dist_info, eval_split=eval_split, fingerprint=fingerprint,
        on_progress=on_progress,
    )
    summary: dict[str, Any] = {
        "name": name or out.name,
        "role": "teacher",
        "kind": config.kind,
        "source": "trained",
        "best_epoch": result.best_epoch,
        "best_metrics": result.best_metrics,
        "val_history": result.val_history,
        "steps": result.steps,
        "resumed_from_epoch": result.resumed_from_epoch,
        "world_size": dist_info.world_size,
        "frames_digest": str(frames.digest),
        "manifest_digest": manifest.digest(),
        "config": asdict(config),
        **info,
    }
    if dist_info.is_main:
        best = work / BEST_FILE
        if not best.exists():
            raise RuntimeError(f"{work}: training finished without a best checkpoint")
        model, extra = load_model(best)
        save_model(work / MODEL_FILE, model,
                   extra={**extra, "role": "teacher", "name": summary["name"]})
        best.unlink()
        (work / STATE_FILE).unlink(missing_ok=True)
        for log in (TRAIN_LOG, VAL_LOG):  # dvc plots expect the files even if empty
            if not (work / log).exists():
                (work / log).write_text("", encoding="utf-8")
        summary["model_sha256"] = sha256_file(work / MODEL_FILE)
        summary["official_masking"] = bool(getattr(model, "official_masking", False))
        _write_summary(work / SUMMARY_FILE, summary)
        publish_dir(work, out)
    barrier()
    del teacher
    return TeacherTrainRun(out, summary)


# ---------------------------------------------------------------------------------- import
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
    if work.exists():
        shutil.rmtree(work)
    work.mkdir(parents=True)
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
    _write_summary(work / SUMMARY_FILE, summary)
    publish_dir(work, out)
    return summary


# ---------------------------------------------------------------------------------- score
def load_teacher(model: str | Path, device: torch.device) -> tuple[Teacher, Path, str]:
    """(teacher in eval mode on ``device``, checkpoint file, its sha256) from a dir or file."""
    path = Path(model)
    if path.is_dir():
        path = path / MODEL_FILE
    if not path.is_file():
        raise InputError("teacher checkpoint not found", file=path)
    loaded, _ = load_model(path)
    if not isinstance(loaded, Teacher):
        raise InputError(f"checkpoint holds a {loaded.kind!r} model, not a teacher", file=path)
    return loaded.to(device).eval(), path, sha256_file(path)


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
) -> TeacherScoreRun:
    """Score ``split`` into ``out_dir/cache.h5`` and measure the teacher on ``metrics_split``.

    Rerunning after a kill resumes the pending row blocks (a tmp file from another checkpoint or
    other inputs is discarded: its provenance attributes differ). ``metrics_split=""`` skips the
    metrics. Under torchrun every rank scores its blocks; rank 0 merges, measures and publishes.
    """
    out = Path(out_dir)
    work = tmp_path_for(out)
    teacher, ckpt, ckpt_sha = load_teacher(model, device)
    meta = cache_meta(teacher, checkpoint_sha256=ckpt_sha, frames=frames, manifest=manifest)
    tokenizer = ClipTokenizer.default()
    autocast = (lambda: autocast_context(device, amp)) if amp != "none" else None
    result = score_teacher(
        teacher, frames, manifest, out_path=work / CACHE_FILE, meta=meta, tokenizer=tokenizer,
        device=device, split=split, batch_size=batch_size, block_rows=block_rows,
        chunk_pairs=chunk_pairs, rank=dist_info.rank, world=dist_info.world_size,
        autocast=autocast, on_mismatch="restart", on_start=on_start, on_progress=on_progress,
    )
    metrics = None
    cache_bytes = 0
    if dist_info.is_main:
        if metrics_split:
            metrics = teacher_test_metrics(
                teacher, frames, manifest, tokenizer=tokenizer, device=device,
                split=metrics_split, batch_size=batch_size, autocast=autocast,
                name=name or out.name, checkpoint_sha256=ckpt_sha,
            )
            write_metrics(work / METRICS_FILE, metrics)
        keep = {CACHE_FILE, METRICS_FILE, SUMMARY_FILE}
        keep |= {p.name for p in shard_files(work / CACHE_FILE, dist_info.world_size)}
        for stale in work.iterdir():  # e.g. shards of an earlier run with another world size
            if stale.name not in keep:
                shutil.rmtree(stale) if stale.is_dir() else stale.unlink()
        cache_bytes = sum(p.stat().st_size for p in work.iterdir() if p.suffix == ".h5")
        _write_summary(work / SUMMARY_FILE, {
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
