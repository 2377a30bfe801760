"""Training the CLIP4Clip student from cached teacher soft labels (or none: the baseline).

Per batch: the student encodes this rank's captions and videos; features are all-gathered with
gradients; the global B×B student logits and B×F AFA weights meet each teacher's cached B×B
logits (read by caption row and the batch's video columns) and B×F relevance (softmaxed over the
teacher's frames); ``pipeline.train.losses.teachclip_loss`` combines them per SPEC §4.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from pipeline import __version__
from pipeline.data.manifest import Manifest
from pipeline.distributed import DistInfo, gather_with_grad
from pipeline.eval.evaluate import EvalSet, build_eval_set, evaluate_retrieval
from pipeline.models.checkpoint import save_model
from pipeline.models.clip import load_clip
from pipeline.models.preprocess import normalize_frames
from pipeline.models.student import Student, StudentConfig
from pipeline.models.teachers.base import masked_softmax
from pipeline.models.tokenizer import ClipTokenizer
from pipeline.train.data_loading import (
    GlobalBatchDataset,
    TeacherSource,
    TrainingItems,
    epoch_loader,
    move_batch,
    tokenize_all,
)
from pipeline.train.loop import (
    LoopConfig,
    TrainResult,
    autocast_context,
    run_training,
    seed_everything,
)
from pipeline.train.losses import TeacherTargets, teachclip_loss
from pipeline.train.schedule import warmup_cosine


@dataclass
class OptimConfig:
    """SPEC §6 defaults (AdamW with fp32 master weights instead of BertAdam in fp16)."""

    epochs: int = 10
    batch_size: int = 120
    lr: float = 1e-4
    coef_lr: float = 1e-3
    afa_lr_multiplier: float = 10.0
    weight_decay: float = 0.2
    warmup_fraction: float = 0.1
    grad_clip: float = 1.0
    betas: tuple[float, float] = (0.9, 0.98)
    eps: float = 1e-6


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
    loss_weights: tuple[float, float, float] | None = None
    seed: int = 42
    amp: str = "none"
    workers: int = 0
    in_memory: bool = False
    eval_batch_size: int = 64
    log_every: int = 10
    select_metric: str = "R1"
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


class StudentRetriever:
    """Evaluation adapter: one normalised vector per text and per video, dot-product scores."""

    def __init__(self, student: Student) -> None:
        self.student = student

    def encode_text(self, ids: torch.Tensor, mask: torch.Tensor) -> dict[str, torch.Tensor]:
        s = self.student.encode_text(ids, mask)
        return {"embedding": torch.nn.functional.normalize(s.float(), dim=-1)}

    def encode_video(self, frames: torch.Tensor, mask: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"embedding": self.student.encode_video(frames, mask).embedding.float()}

    def score(self, text: Mapping[str, torch.Tensor], video: Mapping[str, torch.Tensor]
              ) -> torch.Tensor:
        return text["embedding"] @ video["embedding"].T


def build_optimizer(student: Student, optim: OptimConfig, device: torch.device
                    ) -> torch.optim.Optimizer:
    """AdamW over the student's SPEC §6 parameter groups (shared by training and the bench).

    On CUDA the fused kernel updates every parameter in a few launches (the default foreach
    path launches several kernels per parameter group and tensor list).
    """
    return torch.optim.AdamW(
        student.param_groups(optim.lr, optim.coef_lr, optim.afa_lr_multiplier,
                             optim.weight_decay),
        lr=optim.lr, betas=optim.betas, eps=optim.eps, fused=device.type == "cuda",
    )


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
    sentence = gather_with_grad(nn.functional.normalize(sentence.float(), dim=-1))
    video = gather_with_grad(video.float())
    scale = student.clip.logit_scale.exp()
    # λ·ŝ·v̂ᵀ in float32 even under autocast: bf16 would round λ≈100-scaled logits to ±0.25.
    with torch.autocast(device_type=device.type, enabled=False):
        logits = scale.float() * sentence @ video.T
    teachers = []
    if batch["teachers"]:
        if weights is None:
            raise ValueError("distillation needs frame weights: use aggregation 'afa'")
        weights = gather_with_grad(weights.float())
        for target in batch["teachers"]:
            relevance = masked_softmax(target["relevance_logits"].float(), target["relevance_mask"])
            teachers.append(TeacherTargets(target["logits"], relevance))
    parts = teachclip_loss(
        logits, weights, teachers, coarse=config.coarse, fine=config.fine, beta=config.beta,
        weights=config.loss_weights,
    )
    return {"total": parts.total, "gt": parts.gt.detach(), "coarse": parts.coarse.detach(),
            "fine": parts.fine.detach(), "logit_scale": scale.detach()}


def build_training_items(
    manifest: Manifest,
    frames: Any,
    tokenizer: ClipTokenizer,
    max_words: int,
    caches: Sequence[Any],
) -> tuple[TrainingItems, int]:
    """Train-split captions whose video is in frames.h5, with rows into every teacher cache.

    Returns the items and the number of captions dropped because their video failed to decode.
    """
    train = manifest.split("train")
    present = set(frames.video_ids)
    keep = train.captions["video_id"].isin(present)
    captions = train.captions[keep]
    ids, mask = tokenize_all(tokenizer, list(captions["text"]), max_words)
    frame_rows = np.array([frames.row_of(v) for v in captions["video_id"]], dtype=np.int64)
    sources = []
    for cache in caches:
        rows = np.asarray(cache.row_of_caption(list(captions["caption_id"])), dtype=np.int64)
        cols = np.asarray(cache.col_of_video(list(captions["video_id"])), dtype=np.int64)
        sources.append(TeacherSource(cache, rows, cols))
    return TrainingItems(ids, mask, frame_rows, sources), int((~keep).sum())


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
    # Seed before any module is built: new layers (AFA, heads) draw their initial weights from
    # the global RNG, so an unseeded build made identical runs differ.
    seed_everything(config.seed)  # same on every rank (DDP also broadcasts rank 0's weights)
    tokenizer = ClipTokenizer.default()
    towers = load_clip(config.clip, gradient_checkpointing=config.gradient_checkpointing,
                       seed=config.seed)
    towers.freeze_per_spec()
    student = Student(towers, config.student).to(device)
    items, dropped = build_training_items(manifest, frames, tokenizer, config.max_words, caches)
    optim = config.optim
    if optim.batch_size % dist_info.world_size:
        raise ValueError(f"batch size {optim.batch_size} must divide by the number of processes "
                         f"{dist_info.world_size}")
    if len(items) < optim.batch_size:
        raise ValueError(f"only {len(items)} training captions for a batch of {optim.batch_size}")
    dataset = GlobalBatchDataset(items, frames, optim.batch_size, config.seed,
                                 dist_info.rank, dist_info.world_size)
    steps_per_epoch = len(dataset)
    optimizer = build_optimizer(student, optim, device)
    scheduler = warmup_cosine(optimizer, steps_per_epoch * optim.epochs, optim.warmup_fraction)
    step_model = build_step_model(student, config)
    eval_set: EvalSet | None = None
    if dist_info.is_main and eval_split:
        eval_set = build_eval_set(manifest, frames, eval_split)

    def evaluate(_model: nn.Module, _epoch: int) -> dict[str, float]:
        assert eval_set is not None
        return evaluate_retrieval(
            StudentRetriever(student), frames, eval_set, tokenizer, config.max_words, device,
            config.eval_batch_size, lambda: autocast_context(device, config.amp),
        )

    def save_best(path: Path) -> None:
        save_model(path, student, extra={"train_config": _jsonable(asdict(config))})

    loop = LoopConfig(
        epochs=optim.epochs, seed=config.seed, grad_clip=optim.grad_clip, amp=config.amp,
        log_every=config.log_every, select_metric=config.select_metric,
        fingerprint={"config": _resume_identity(config), "version": __version__,
                     **(fingerprint or {})},
    )
    result = run_training(
        model=step_model,
        optimizer=optimizer,
        scheduler=scheduler,
        step_fn=lambda model, batch: student_loss_step(model, student, batch, config, device),
        batches_for_epoch=lambda epoch: epoch_loader(dataset, epoch, config.workers,
                                                     device.type == "cuda"),
        steps_per_epoch=steps_per_epoch,
        config=loop,
        work_dir=work_dir,
        device=device,
        dist_info=dist_info,
        evaluate=evaluate if eval_set is not None and len(eval_set.caption_ids) else None,
        save_best=save_best,
        after_step=student.clamp_logit_scale,
        batch_size_of=lambda batch: len(batch["input_ids"]),
        on_progress=on_progress,
    )
    summary = {"dropped_captions": dropped, "train_captions": len(items),
               "steps_per_epoch": steps_per_epoch}
    return student, result, summary


#: Settings that change speed or memory but not a single weight: a run killed with
#: ``--workers 4`` may be resumed with ``--workers 0`` (or ``--in-memory``).
_NOT_IN_RESUME_IDENTITY = ("workers", "in_memory", "eval_batch_size", "compile")


def _resume_identity(config: StudentTrainConfig) -> dict[str, Any]:
    """The config as the loop's resume fingerprint sees it (see ``_NOT_IN_RESUME_IDENTITY``)."""
    data = asdict(config)
    for key in _NOT_IN_RESUME_IDENTITY:
        data.pop(key, None)
    return data


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    return value
