"""Training the CLIP4Clip student from cached teacher soft labels (or none: the baseline).

Per batch: the student encodes this rank's captions and videos; features are all-gathered with
gradients; the global B×B student logits and B×F AFA weights meet each teacher's cached B×B
logits (read by caption row and the batch's video columns) and B×F relevance (softmaxed over the
teacher's frames); ``pipeline.train.losses.teachclip_loss`` combines them per method §4.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from pipeline.data.manifest import Manifest
from pipeline.distributed import DistInfo, gather_with_grad
from pipeline.eval.adapters import StudentRetriever
from pipeline.models.checkpoint import save_model
from pipeline.models.preprocess import normalize_frames
from pipeline.models.student import Student, StudentConfig, student_logits
from pipeline.models.teachers.base import masked_softmax
from pipeline.models.tokenizer import ClipTokenizer
from pipeline.train.data_loading import build_training_items, move_batch
from pipeline.train.fit import FitSpec, fit_retrieval
from pipeline.train.loop import TrainResult
from pipeline.train.losses import TeacherTargets, teachclip_loss
from pipeline.train.setup import OptimConfig, jsonable, seeded_towers


@dataclass
class StudentTrainConfig:
    """Everything that defines a student training run (recorded in the checkpoint)."""

    clip: str = "tiny"
    student: StudentConfig = field(default_factory=StudentConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    max_words: int = 32
    coarse: str = "pear"
    fine: str = "ce"
    beta: float = 1.0
    #: Divides the cached relevance logits before their softmax (method §4 fine target). 1 is the
    #: official reading; the official teachers' relevance is a softmax over cosines at
    #: temperature 1, which is nearly uniform over frames, so < 1 sharpens it without rescoring.
    relevance_temperature: float = 1.0
    loss_weights: tuple[float, float, float] | None = None
    #: Label smoothing of the ground-truth InfoNCE (0 = official). The control that tells
    #: distillation from generic regularisation: soft targets without a teacher.
    label_smoothing: float = 0.0
    seed: int = 42
    amp: str = "none"
    workers: int = 0
    in_memory: bool = False
    eval_batch_size: int = 64
    log_every: int = 10
    select_metric: str = "R1"
    #: Early stopping (pipeline.plateau): stop once this many epochs in a row bring no new best
    #: validation R@1; 0 = train all ``optim.epochs`` (the best epoch is kept either way).
    patience: int = 0
    gradient_checkpointing: bool = False
    #: ``torch.compile`` the training forward (``StudentStep``); pays off on GPUs after a
    #: compile of tens of seconds, so it stays off by default (and on the CPU, and in tests).
    compile: bool = False


class StudentStep(nn.Module):
    """The forward that DDP wraps: features of this rank's captions and videos."""

    def __init__(self, student: Student) -> None:
        super().__init__()
        self.student = student

    def forward(
        self, ids: torch.Tensor, attention: torch.Tensor, frames: torch.Tensor,
        video_mask: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        sentence = self.student.encode_text(ids, attention)
        video = self.student.encode_video(frames, video_mask)
        return sentence, video.embedding, video.frame_weights


def build_step_model(student: Student, config: StudentTrainConfig) -> StudentStep:
    """The module the loop steps (and DDP wraps); compiled in place when ``config.compile``.

    ``nn.Module.compile`` keeps the state-dict keys (no ``_orig_mod.`` prefix), so checkpoints
    and resumes do not depend on the setting. Evaluation calls the student directly, uncompiled.
    """
    step_model = StudentStep(student)
    if config.compile:
        step_model.compile()
    return step_model


def student_loss_step(
    step_model: nn.Module,
    student: Student,
    batch: dict[str, Any],
    config: StudentTrainConfig,
    device: torch.device,
) -> dict[str, torch.Tensor]:
    """One step's loss parts: gather features, build global logits, compare with teachers."""
    batch = move_batch(batch, device)
    frames = normalize_frames(batch["frames"], batch["video_mask"])
    sentence, video, weights = step_model(
        batch["input_ids"], batch["attention_mask"], frames, batch["video_mask"]
    )
    logits = student_logits(gather_with_grad(sentence.float()), gather_with_grad(video.float()),
                            student.clip.logit_scale)
    teachers = []
    if batch["teachers"]:
        if weights is None:
            raise ValueError("distillation needs frame weights: use aggregation 'afa'")
        weights = gather_with_grad(weights.float())
        for target in batch["teachers"]:
            relevance = masked_softmax(
                target["relevance_logits"].float() / config.relevance_temperature,
                target["relevance_mask"])
            teachers.append(TeacherTargets(target["logits"], relevance))
    parts = teachclip_loss(
        logits, weights, teachers, coarse=config.coarse, fine=config.fine, beta=config.beta,
        weights=config.loss_weights, label_smoothing=config.label_smoothing,
    )
    return {"total": parts.total, "gt": parts.gt.detach(), "coarse": parts.coarse.detach(),
            "fine": parts.fine.detach(),
            "logit_scale": student.clip.logit_scale.exp().detach()}


def student_param_groups(student: Student, optim: OptimConfig) -> list[dict[str, Any]]:
    """The student's method §6 parameter groups (CLIP, seqTransf, AFA learning rates)."""
    return student.param_groups(optim.lr, optim.coef_lr, optim.afa_lr_multiplier,
                                optim.weight_decay)


def train_student(
    *,
    config: StudentTrainConfig,
    manifest: Manifest,
    frames: Any,
    caches: Sequence[Any],
    work_dir: Path,
    device: torch.device,
    dist_info: DistInfo,
    eval_split: str = "val",
    fingerprint: Mapping[str, Any] | None = None,
    on_progress: Callable[[int], None] | None = None,
) -> tuple[Student, TrainResult, dict[str, Any]]:
    """Train a student; returns the model at its best validation epoch and the run summary.

    ``caches`` are opened :class:`pipeline.cache.reader.TeacherCache` objects already checked
    for compatibility by the caller (F, L, ids, digests); none means the CLIP4Clip baseline.
    """
    towers = seeded_towers(config.clip, config.seed, frames=frames,
                           gradient_checkpointing=config.gradient_checkpointing)
    student = Student(towers, config.student).to(device)
    items, dropped = build_training_items(manifest, frames, ClipTokenizer.default(),
                                          config.max_words, caches)

    def save_best(path: Path) -> None:
        save_model(path, student, extra={"train_config": jsonable(asdict(config))})

    spec = FitSpec(
        step_model=build_step_model(student, config),
        step_fn=lambda model, batch: student_loss_step(model, student, batch, config, device),
        param_groups=student_param_groups(student, config.optim),
        retriever=StudentRetriever(student),
        save_best=save_best,
        after_step=student.clip.clamp_logit_scale,
    )
    result, steps_per_epoch = fit_retrieval(
        config=config, spec=spec, items=items, manifest=manifest, frames=frames,
        work_dir=work_dir, device=device, dist_info=dist_info, eval_split=eval_split,
        inputs=fingerprint, on_progress=on_progress,
    )
    summary = {"dropped_captions": dropped, "train_captions": len(items),
               "steps_per_epoch": steps_per_epoch}
    return student, result, summary
