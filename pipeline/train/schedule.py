"""Learning-rate schedule of the official code: linear warm-up then cosine decay to zero."""

from __future__ import annotations

import math

import torch


def warmup_cosine_factor(step: int, total_steps: int, warmup_fraction: float) -> float:
    """Multiplier of the base lr at ``step`` (0-based) out of ``total_steps``.

    Linear warm-up over the first ``warmup_fraction`` of the steps, then half a cosine to 0, as
    BertAdam's ``warmup_cosine`` in CLIP4Clip/TeachCLIP (which decays to 0 at the last step).
    """
    total_steps = max(1, total_steps)
    progress = step / total_steps
    if warmup_fraction > 0 and progress < warmup_fraction:
        return progress / warmup_fraction
    return 0.5 * (1.0 + math.cos(math.pi * progress))


def warmup_cosine(
    optimizer: torch.optim.Optimizer, total_steps: int, warmup_fraction: float
) -> torch.optim.lr_scheduler.LambdaLR:
    """A LambdaLR applying :func:`warmup_cosine_factor` to every parameter group."""
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: warmup_cosine_factor(step, total_steps, warmup_fraction)
    )
