"""Mixed precision in one place: training, evaluation, scoring and indexing all use it.

Why a leaf module: evaluation and indexing need the same autocast as training, and importing it
from the training loop made lower layers depend on the training layer.
"""

from __future__ import annotations

from contextlib import AbstractContextManager, nullcontext

import torch

AMP_CHOICES = ("none", "bf16", "fp16")


def autocast_context(device: torch.device, amp: str) -> AbstractContextManager:
    """Autocast for the requested precision (no-op for ``none``)."""
    if amp == "none":
        return nullcontext()
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}[amp]
    return torch.autocast(device_type=device.type, dtype=dtype)
