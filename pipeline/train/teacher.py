"""Fine-tuning a teacher (X-CLIP, TS2-Net, X-Pool) from CLIP weights with symmetric InfoNCE.

The teachers are dual encoders with a pairwise head, so under DDP each rank encodes its share,
the per-item feature dicts are all-gathered with gradients, and the head scores the global
batch. Validation R@K runs every epoch; the best epoch is kept (SPEC §3.1 training defaults).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from pipeline import __version__
from pipeline.data.manifest import Manifest
from pipeline.distributed import DistInfo, gather_no_grad, gather_with_grad
from pipeline.eval.evaluate import build_eval_set, evaluate_retrieval
from pipeline.models.checkpoint import save_model
from pipeline.models.clip import load_clip
from pipeline.models.preprocess import normalize_frames
from pipeline.models.teachers import build_teacher
from pipeline.models.teachers.base import Teacher
from pipeline.models.tokenizer import ClipTokenizer
from pipeline.train.data_loading import GlobalBatchDataset, epoch_loader, move_batch
from pipeline.train.loop import (
    LoopConfig,
    TrainResult,
    autocast_context,
    run_training,
    seed_everything,
)
from pipeline.train.losses import symmetric_infonce
from pipeline.train.schedule import warmup_cosine
from pipeline.train.student import OptimConfig, build_training_items


@dataclass
class TeacherTrainConfig:
    """A teacher training run (defaults: X-CLIP's original recipe, SPEC §3.1)."""

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
    gradient_checkpointing: bool = False


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


class TeacherRetriever:
    """Evaluation adapter: the teacher's own encoders and cross-grained score."""

    def __init__(self, teacher: Teacher) -> None:
        self.teacher = teacher

    def encode_text(self, ids: torch.Tensor, mask: torch.Tensor) -> dict[str, torch.Tensor]:
        return self.teacher.encode_text(ids, mask)

    def encode_video(self, frames: torch.Tensor, mask: torch.Tensor) -> dict[str, torch.Tensor]:
        return self.teacher.encode_video(frames, mask)

    def score(self, text: Mapping[str, torch.Tensor], video: Mapping[str, torch.Tensor]
              ) -> torch.Tensor:
        return self.teacher.score(dict(text), dict(video))


def clamp_logit_scale(towers_logit_scale: nn.Parameter, max_log: float = 4.6052) -> None:
    """Keep λ ≤ 100 after every optimiser step, as CLIP and TeachCLIP do."""
    with torch.no_grad():
        towers_logit_scale.clamp_(max=max_log)


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
    # Seed before any module is built: new layers (AFA, heads) draw their initial weights from
    # the global RNG, so an unseeded build made identical runs differ.
    seed_everything(config.seed)  # same on every rank (DDP also broadcasts rank 0's weights)
    tokenizer = ClipTokenizer.default()
    towers = load_clip(config.clip, gradient_checkpointing=config.gradient_checkpointing,
                       seed=config.seed)
    towers.freeze_per_spec()
    teacher = build_teacher(config.kind, towers, config.max_words, config.max_frames,
                            **config.options).to(device)
    items, dropped = build_training_items(manifest, frames, tokenizer, config.max_words, [])
    optim = config.optim
    if optim.batch_size % dist_info.world_size:
        raise ValueError(f"batch size {optim.batch_size} must divide by the number of processes "
                         f"{dist_info.world_size}")
    batch_size = min(optim.batch_size, len(items))
    dataset = GlobalBatchDataset(items, frames, batch_size, config.seed, dist_info.rank,
                                 dist_info.world_size)
    optimizer = torch.optim.AdamW(
        teacher.param_groups(optim.lr, optim.coef_lr, optim.weight_decay),
        lr=optim.lr, betas=optim.betas, eps=optim.eps,
    )
    scheduler = warmup_cosine(optimizer, len(dataset) * optim.epochs, optim.warmup_fraction)
    eval_set = build_eval_set(manifest, frames, eval_split) if (
        dist_info.is_main and eval_split) else None

    def evaluate(_model: nn.Module, _epoch: int) -> dict[str, float]:
        assert eval_set is not None
        return evaluate_retrieval(
            TeacherRetriever(teacher), frames, eval_set, tokenizer, config.max_words, device,
            config.eval_batch_size, lambda: autocast_context(device, config.amp),
        )

    def save_best(path: Path) -> None:
        save_model(path, teacher, extra={"train_config": asdict(config)})

    loop = LoopConfig(
        epochs=optim.epochs, seed=config.seed, grad_clip=optim.grad_clip, amp=config.amp,
        log_every=config.log_every, select_metric=config.select_metric,
        fingerprint={"config": asdict(config), "version": __version__, **(fingerprint or {})},
    )
    result = run_training(
        model=TeacherStep(teacher),
        optimizer=optimizer,
        scheduler=scheduler,
        step_fn=lambda model, batch: teacher_loss_step(model, teacher, batch, device),
        batches_for_epoch=lambda epoch: epoch_loader(dataset, epoch, config.workers,
                                                     device.type == "cuda"),
        steps_per_epoch=len(dataset),
        config=loop,
        work_dir=work_dir,
        device=device,
        dist_info=dist_info,
        evaluate=evaluate if eval_set is not None and len(eval_set.caption_ids) else None,
        save_best=save_best,
        after_step=lambda: clamp_logit_scale(teacher.clip.logit_scale),
        batch_size_of=lambda batch: len(batch["input_ids"]),
        on_progress=on_progress,
    )
    return teacher, result, {"dropped_captions": dropped, "train_captions": len(items),
                             "steps_per_epoch": len(dataset)}
