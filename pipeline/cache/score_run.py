"""Teacher scoring as a stage: score into ``<out>.tmp`` (resumable by row block), publish ``<out>``.

Layout: ``cache.h5`` (+ ``cache.shard-RRR-of-WWW.h5`` when scored by several processes;
``cache.h5`` then references them), ``metrics.json`` (the teacher's numbers on the test split),
``metrics.provenance.json`` (what they were measured on) and ``summary.json``. Rerunning after
a kill resumes the pending row blocks.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from dataclasses import dataclass
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
    path = resolve_model_path(model)
    loaded, extra = load_model(path)
    if not isinstance(loaded, Teacher):
        raise InputError(f"checkpoint holds a {loaded.kind!r} model, not a teacher", file=path)
    return loaded.to(device).eval(), path, sha256_file(path), training_seed(extra)


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
    teacher, ckpt, ckpt_sha, seed = load_teacher(model, device)
    meta = cache_meta(teacher, checkpoint_sha256=ckpt_sha, frames=frames, manifest=manifest)
    tokenizer = ClipTokenizer.default()
    autocast = (lambda: autocast_context(device, amp)) if amp != "none" else None
    with output_lock(out, enabled=dist_info.is_main):
        result = score_teacher(
            teacher, frames, manifest, out_path=work / CACHE_FILE, meta=meta,
            tokenizer=tokenizer, device=device, split=split, batch_size=batch_size,
            block_rows=block_rows, chunk_pairs=chunk_pairs, rank=dist_info.rank,
            world=dist_info.world_size, autocast=autocast, on_mismatch="restart",
            on_start=on_start, on_progress=on_progress,
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
