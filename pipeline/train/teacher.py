"""Fine-tuning a teacher (X-CLIP, TS2-Net, X-Pool) from CLIP weights with symmetric InfoNCE.

The teachers are dual encoders with a pairwise head, so under DDP each rank encodes its share,
the per-item feature dicts are all-gathered with gradients, and the head scores the global
batch. Validation R@K runs every epoch; the best epoch is kept (method §3.1 training defaults).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from pipeline.data.manifest import Manifest
from pipeline.distributed import DistInfo, gather_no_grad, gather_with_grad
from pipeline.eval.adapters import TeacherRetriever
from pipeline.models.checkpoint import save_model
from pipeline.models.preprocess import normalize_frames
from pipeline.models.teachers import build_teacher
from pipeline.models.teachers.base import Teacher
from pipeline.models.tokenizer import ClipTokenizer
from pipeline.train.data_loading import build_training_items, move_batch
from pipeline.train.fit import FitSpec, fit_retrieval
from pipeline.train.loop import TrainResult
from pipeline.train.losses import symmetric_infonce
from pipeline.train.setup import OptimConfig, jsonable, seeded_towers


@dataclass
class TeacherTrainConfig:
    """A teacher training run (defaults: X-CLIP's original recipe, method §3.1)."""

    kind: str = "xclip"
    clip: str = "tiny"
    options: dict[str, Any] = field(default_factory=dict)  # teacher constructor options
    optim: OptimConfig = field(default_factory=lambda: OptimConfig(
        epochs=5, batch_size=300, lr=1e-4, coef_lr=1e-3, afa_lr_multiplier=1.0))
    max_words: int = 32
    max_frames: int = 12
    seed: int = 42
    amp: str = "none"
    workers: int = 0
    eval_batch_size: int = 64
    log_every: int = 10
    select_metric: str = "R1"
    #: Early stopping (pipeline.plateau): stop once this many epochs in a row bring no new best
    #: validation R@1; 0 = train all ``optim.epochs`` (the best epoch is kept either way).
    patience: int = 0
    gradient_checkpointing: bool = False
    #: Cross-fitting (:mod:`pipeline.data.folds`): ``folds`` = K >= 2 trains fold teacher
    #: ``fold`` on the train videos outside fold ``fold``; 0 = the ordinary teacher.
    folds: int = 0
    fold: int = 0


class TeacherStep(nn.Module):
    """The forward DDP wraps: per-item text and video features of this rank's share."""

    def __init__(self, teacher: Teacher) -> None:
        super().__init__()
        self.teacher = teacher

    def forward(self, ids: torch.Tensor, attention: torch.Tensor, frames: torch.Tensor,
                video_mask: torch.Tensor) -> tuple[dict[str, torch.Tensor], ...]:
        return (self.teacher.encode_text(ids, attention),
                self.teacher.encode_video(frames, video_mask))


def _gather_features(feats: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """All-gather a feature dict: float tensors with gradients, masks/ids without."""
    return {key: gather_with_grad(value) if value.is_floating_point() else gather_no_grad(value)
            for key, value in feats.items()}


def teacher_loss_step(step_model: nn.Module, teacher: Teacher, batch: dict[str, Any],
                      device: torch.device) -> dict[str, torch.Tensor]:
    """Symmetric InfoNCE on the teacher's global-batch score matrix."""
    batch = move_batch(batch, device)
    frames = normalize_frames(batch["frames"], batch["video_mask"])
    text, video = step_model(batch["input_ids"], batch["attention_mask"], frames,
                             batch["video_mask"])
    logits = teacher.score(_gather_features(text), _gather_features(video))
    loss = symmetric_infonce(logits)
    return {"total": loss, "gt": loss.detach(),
            "logit_scale": teacher.clip.logit_scale.exp().detach()}


def train_teacher(
    *,
    config: TeacherTrainConfig,
    manifest: Manifest,
    frames: Any,
    work_dir: Path,
    device: torch.device,
    dist_info: DistInfo,
    eval_split: str = "val",
    fingerprint: Mapping[str, Any] | None = None,
    on_progress: Callable[[int], None] | None = None,
) -> tuple[Teacher, TrainResult, dict[str, Any]]:
    """Fine-tune a teacher; ``work_dir/best.pt`` holds the best validation epoch."""
    towers = seeded_towers(config.clip, config.seed, frames=frames,
                           gradient_checkpointing=config.gradient_checkpointing)
    teacher = build_teacher(config.kind, towers, config.max_words, config.max_frames,
                            **config.options).to(device)
    items, dropped = build_training_items(manifest, frames, ClipTokenizer.default(),
                                          config.max_words, [])
    optim = config.optim

    def save_best(path: Path) -> None:
        save_model(path, teacher, extra={"train_config": jsonable(asdict(config))})

    spec = FitSpec(
        step_model=TeacherStep(teacher),
        step_fn=lambda model, batch: teacher_loss_step(model, teacher, batch, device),
        param_groups=teacher.param_groups(optim.lr, optim.coef_lr, optim.weight_decay),
        retriever=TeacherRetriever(teacher),
        save_best=save_best,
        after_step=teacher.clip.clamp_logit_scale,
    )
    result, steps_per_epoch = fit_retrieval(
        config=config, spec=spec, items=items, manifest=manifest, frames=frames,
        work_dir=work_dir, device=device, dist_info=dist_info, eval_split=eval_split,
        inputs=fingerprint, on_progress=on_progress,
    )
    return teacher, result, {"dropped_captions": dropped, "train_captions": len(items),
                             "steps_per_epoch": steps_per_epoch}
