"""Evaluate any saved model (student, baseline or teacher) on one split of a manifest.

Why one entry point: the results table compares teachers with students, so every model kind must
be measured by the same code (``pipeline.eval.evaluate``) on the same frames; only the adapter that
turns a model into "encode texts, encode videos, score" differs, chosen from the checkpoint's
``kind``.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from pipeline.atomic import sha256_file
from pipeline.data.frames_store import check_resolution
from pipeline.data.manifest import Manifest
from pipeline.errors import InputError, MismatchError, TeachclipWarning
from pipeline.eval.adapters import StudentRetriever, TeacherRetriever
from pipeline.eval.evaluate import build_eval_set, evaluate_retrieval
from pipeline.models.checkpoint import MODEL_FILE, load_model, resolve_model_path
from pipeline.models.student import Student
from pipeline.models.tokenizer import ClipTokenizer
from pipeline.precision import autocast_context

TEACHER_ROLE, BASELINE_ROLE, STUDENT_ROLE = "teacher", "baseline", "student"


@dataclass
class LoadedModel:
    """A checkpoint ready for retrieval: the model, its adapter and what it was trained with."""

    path: Path
    model: torch.nn.Module
    kind: str  # "student" or a teacher kind
    role: str  # teacher | baseline | student (a student trained without caches is the baseline)
    retriever: Any  # pipeline.eval.evaluate.Retriever
    max_words: int
    max_frames: int | None  # frames the model was built for (None: any F works)
    image_size: int
    sha256: str
    extra: dict[str, Any]


def load_retrieval_model(path: str | Path, device: torch.device) -> LoadedModel:
    """Load a checkpoint and wrap it in the right retrieval adapter for its kind."""

    file = resolve_model_path(path)
    model, extra = load_model(file, map_location="cpu")
    model = model.to(device).eval()
    if isinstance(model, Student):
        train_config = extra.get("train_config", {})
        max_words = int(train_config.get("max_words", 32))
        retriever: Any = StudentRetriever(model)
        role = str(extra.get("role") or (STUDENT_ROLE if extra.get("teachers") else
                                         BASELINE_ROLE if "teachers" in extra else STUDENT_ROLE))
        max_frames = None
    else:
        max_words = int(model.max_words)
        retriever = TeacherRetriever(model)
        role = TEACHER_ROLE
        max_frames = int(model.max_frames)
    return LoadedModel(
        path=file, model=model, kind=str(model.kind), role=role, retriever=retriever,
        max_words=max_words, max_frames=max_frames, image_size=int(model.clip.image_size),
        sha256=sha256_file(file), extra=extra,
    )


def training_seed(extra: Mapping[str, Any]) -> int | None:
    """The seed a checkpoint was trained with (``extra["train_config"]["seed"]``), else None.

    Why recorded with the metrics: ``teachclip report --paired`` compares a student with its
    no-teacher baseline seed by seed, since seed noise is as large as the effects measured; an
    imported release records no training seed (None), and the report then pairs by position.
    """
    config = extra.get("train_config")
    seed = config.get("seed") if isinstance(config, Mapping) else None
    if isinstance(seed, bool) or not isinstance(seed, int):
        return None
    return int(seed)


def default_name(loaded: LoadedModel) -> str:
    """The run name recorded at training, else the model's folder (``x/model.pt``) or stem."""
    if loaded.extra.get("name"):
        return str(loaded.extra["name"])
    if loaded.path.name == MODEL_FILE:
        return loaded.path.parent.name
    return loaded.path.stem


def check_frames_fit(loaded: LoadedModel, frames: Any) -> None:
    """Refuse frames the model cannot take (resolution, or F for F-specific teachers)."""
    check_resolution(frames.height, frames.width, loaded.image_size,
                     model=f"the model {loaded.path}", file=getattr(frames, "path", None))
    if loaded.max_frames is not None and frames.max_frames != loaded.max_frames:
        path = getattr(frames, "path", None)
        raise MismatchError(f"max_frames (F) of {loaded.kind} teacher vs frames.h5",
                            loaded.max_frames, frames.max_frames, file=path,
                            expected_in=f"the teacher {loaded.path}",
                            found_in=str(path or "the frames"),
                            fix=f"use frames extracted with --max-frames {loaded.max_frames}")


class DroppedCaptionsWarning(TeachclipWarning):
    """Captions were left out of an evaluation because their video failed to decode."""


def warn_dropped(eval_set: Any, split: str, frames_path: Any, shown: int = 5) -> None:
    """Say which captions an evaluation leaves out: R@K over fewer queries than the split has
    is not comparable with published numbers, and the JSON alone is easy to overlook."""
    ids = list(getattr(eval_set, "dropped_caption_ids", []))
    if not eval_set.dropped_captions:
        return
    more = ", ..." if len(ids) > shown else ""
    total = eval_set.dropped_captions + len(eval_set.caption_ids)
    warnings.warn(
        f"{eval_set.dropped_captions} of {total} {split} captions left out because their video "
        f"is not in {frames_path or 'frames.h5'} (failed to decode; see its failed_ids): "
        f"{', '.join(ids[:shown])}{more}. R@K is over {len(eval_set.caption_ids)} queries and not "
        "comparable with numbers on the full split", DroppedCaptionsWarning, stacklevel=3)


def evaluate_model(
    loaded: LoadedModel,
    frames: Any,
    manifest: Manifest,
    split: str,
    device: torch.device,
    *,
    batch_size: int = 64,
    amp: str = "none",
    name: str | None = None,
) -> dict[str, Any]:
    """method §7 metrics of ``loaded`` on ``split``, plus what identifies the measurement.

    Every test video is embedded once and every caption once (``evaluate_retrieval``); no
    wall-clock time goes into the result so DVC sees identical metrics as unchanged.
    """
    check_frames_fit(loaded, frames)
    eval_set = build_eval_set(manifest, frames, split)
    if not eval_set.caption_ids:
        raise InputError(f"split {split!r} has no captions whose video is in frames.h5",
                         file=getattr(frames, "path", None))
    warn_dropped(eval_set, split, getattr(frames, "path", None))
    metrics = evaluate_retrieval(
        loaded.retriever, frames, eval_set, ClipTokenizer.default(), loaded.max_words, device,
        batch_size, lambda: autocast_context(device, amp),
    )
    return {
        "model": name or default_name(loaded),
        "kind": loaded.kind,
        "role": loaded.role,
        "split": split,
        "n_videos": len(eval_set.video_ids),
        "dropped_captions": eval_set.dropped_captions,
        "model_sha256": loaded.sha256,
        "model_path": str(loaded.path),
        "seed": training_seed(loaded.extra),
        "frames_digest": str(frames.digest),
        "manifest_digest": manifest.digest(),
        **{k: int(v) if k.endswith("n_queries") else v for k, v in metrics.items()},
    }
