"""One fine-tuning run of a retrieval model (teacher or student) on caption–video batches.

Why shared: teachers and students differ only in the model, its step and its parameter groups;
the batches, optimiser, schedule, validation, resume fingerprint and small-data checks are the
same, so they are written once here and the two training modules only say what differs.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from pipeline.data.manifest import Manifest
from pipeline.distributed import DistInfo
from pipeline.errors import TeachclipWarning
from pipeline.eval.evaluate import build_eval_set, evaluate_retrieval
from pipeline.models.tokenizer import ClipTokenizer
from pipeline.precision import autocast_context
from pipeline.train.data_loading import GlobalBatchDataset, TrainingItems, epoch_loader
from pipeline.train.loop import LoopConfig, TrainResult, run_training
from pipeline.train.schedule import warmup_cosine
from pipeline.train.setup import build_adamw, check_batch, resume_fingerprint


@dataclass
class FitSpec:
    """What a teacher or student run contributes to :func:`fit_retrieval`."""

    step_model: nn.Module  # the forward the loop steps (and DDP wraps)
    step_fn: Callable[[nn.Module, dict[str, Any]], dict[str, torch.Tensor]]
    param_groups: Iterable[dict[str, Any]]
    retriever: Any  # pipeline.eval.adapters.*Retriever over the model being trained
    save_best: Callable[[Path], None]
    after_step: Callable[[], None]


class NoValidationWarning(TeachclipWarning):
    """Training ran without a validation split: the last epoch is kept, not the best."""


def fit_retrieval(
    *,
    config: Any,  # TeacherTrainConfig | StudentTrainConfig (shared field names)
    spec: FitSpec,
    items: TrainingItems,
    manifest: Manifest,
    frames: Any,
    work_dir: Path,
    device: torch.device,
    dist_info: DistInfo,
    eval_split: str,
    inputs: Mapping[str, Any] | None = None,
    on_progress: Callable[[int], None] | None = None,
) -> tuple[TrainResult, int]:
    """Train with validation on ``eval_split``; returns the result and the steps per epoch."""
    optim = config.optim
    check_batch(len(items), optim.batch_size, dist_info.world_size, "training captions")
    dataset = GlobalBatchDataset(items, frames, optim.batch_size, config.seed, dist_info.rank,
                                 dist_info.world_size)
    optimizer = build_adamw(spec.param_groups, optim, device)
    scheduler = warmup_cosine(optimizer, len(dataset) * optim.epochs, optim.warmup_fraction)
    evaluate = _validation(config, spec.retriever, manifest, frames, eval_split, device,
                           dist_info)
    loop = LoopConfig(
        epochs=optim.epochs, seed=config.seed, grad_clip=optim.grad_clip, amp=config.amp,
        log_every=config.log_every, select_metric=config.select_metric,
        patience=config.patience, fingerprint=resume_fingerprint(config, inputs),
    )
    result = run_training(
        model=spec.step_model, optimizer=optimizer, scheduler=scheduler, step_fn=spec.step_fn,
        batches_for_epoch=lambda epoch: epoch_loader(dataset, epoch, config.workers,
                                                     device.type == "cuda"),
        steps_per_epoch=len(dataset), config=loop, work_dir=work_dir, device=device,
        dist_info=dist_info, evaluate=evaluate, save_best=spec.save_best,
        after_step=spec.after_step, batch_size_of=lambda batch: len(batch["input_ids"]),
        on_progress=on_progress,
    )
    return result, len(dataset)


def _validation(config: Any, retriever: Any, manifest: Manifest, frames: Any, eval_split: str,
                device: torch.device, dist_info: DistInfo
                ) -> Callable[[nn.Module, int], dict[str, float]] | None:
    """Per-epoch R@K on ``eval_split`` (main rank only), or None with a warning when there is
    no such split: the run then keeps its last epoch, which the caller should know."""
    if not dist_info.is_main:
        return None
    eval_set = build_eval_set(manifest, frames, eval_split) if eval_split else None
    if eval_set is None or not eval_set.caption_ids:
        warnings.warn(f"no validation captions (split {eval_split!r}): the last epoch is kept "
                      "instead of the best; import with --val-fraction > 0 to select epochs",
                      NoValidationWarning, stacklevel=3)
        return None
    tokenizer = ClipTokenizer.default()

    def evaluate(_model: nn.Module, _epoch: int) -> dict[str, float]:
        return evaluate_retrieval(
            retriever, frames, eval_set, tokenizer, config.max_words, device,
            config.eval_batch_size, lambda: autocast_context(device, config.amp),
        )

    return evaluate
