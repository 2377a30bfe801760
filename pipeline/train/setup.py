"""The training set-up shared by CLIP pre-training, teachers and students.

Why one module: the three runs used to build AdamW three ways, clamp the logit scale with two
spellings, shrink or refuse a too-small dataset differently and fingerprint their resume state
differently. Everything here is the student's behaviour (clear errors, no silent shrinking),
now applied to all three.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass
from typing import Any

import torch

from pipeline import __version__
from pipeline.data.frames_store import check_resolution
from pipeline.errors import InputError
from pipeline.models.clip import ClipTowers, load_clip
from pipeline.train.loop import seed_everything


@dataclass
class OptimConfig:
    """AdamW + warm-up/cosine (method §6; fp32 master weights instead of BertAdam in fp16)."""

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


#: Settings that change speed or memory but not a single weight: a run killed with
#: ``--workers 4`` may be resumed with ``--workers 0`` (or ``--in-memory``).
NOT_IN_RESUME_IDENTITY = ("workers", "in_memory", "eval_batch_size", "compile")


def jsonable(value: Any) -> Any:
    """Dataclass dumps with tuples turned into lists and keys into strings (JSON, fingerprints)."""
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    return value


def resume_fingerprint(config: Any, inputs: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """What a resumed run must share with the interrupted one: the config (less the settings in
    :data:`NOT_IN_RESUME_IDENTITY`), the package version and the inputs' digests."""
    data = jsonable(asdict(config))
    for key in NOT_IN_RESUME_IDENTITY:
        data.pop(key, None)
    return {"config": data, "version": __version__, **(inputs or {})}


def seeded_towers(clip: str, seed: int, *, gradient_checkpointing: bool = False,
                  freeze: bool = True, frames: Any = None) -> ClipTowers:
    """Seed every RNG, then load CLIP (frozen parts per method §6 when ``freeze``).

    Seeding comes first because new layers (AFA, heads, position tables) draw their initial
    weights from the global RNG: an unseeded build made identical runs differ. ``frames`` (a
    FramesReader) must match the CLIP's image size: refused here, before any training work.
    """
    seed_everything(seed)  # same on every rank (DDP also broadcasts rank 0's weights)
    towers = load_clip(clip, gradient_checkpointing=gradient_checkpointing, seed=seed)
    if frames is not None:
        check_resolution(frames.height, frames.width, towers.image_size,
                         model=f"CLIP {clip!r}", file=getattr(frames, "path", None))
    if freeze:
        towers.freeze_per_spec()
    return towers


def check_batch(n_items: int, batch_size: int, world_size: int, what: str) -> None:
    """Refuse a batch that the processes cannot share or that the data cannot fill.

    Why refuse rather than shrink the batch: the batch size sets the number of in-batch negatives
    and thus the loss itself; a silently smaller batch is a different experiment.
    """
    if batch_size < 1:
        raise InputError(f"batch size must be at least 1, got {batch_size}")
    if batch_size % world_size:
        raise InputError(f"batch size {batch_size} must divide by the number of processes "
                         f"{world_size}: choose a multiple of {world_size}")
    if n_items < batch_size:
        raise InputError(f"only {n_items} {what} for a batch of {batch_size}: lower "
                         f"--batch-size to at most {n_items} or add training data")


def build_adamw(groups: Iterable[dict[str, Any]] | Iterable[torch.nn.Parameter],
                optim: OptimConfig, device: torch.device) -> torch.optim.Optimizer:
    """AdamW over ``groups``; on CUDA the fused kernel updates every parameter in a few launches
    (the default foreach path launches several kernels per group and tensor list)."""
    return torch.optim.AdamW(list(groups), lr=optim.lr, betas=optim.betas, eps=optim.eps,
                             weight_decay=optim.weight_decay, fused=device.type == "cuda")
