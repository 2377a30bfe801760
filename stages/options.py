"""Small option helpers shared by stage commands."""

from __future__ import annotations

import torch

from pipeline.errors import InputError


def resolve_device(choice: str, local_rank: int = 0) -> torch.device:
    """``auto`` → CUDA when available; under torchrun each rank takes its local GPU."""
    if choice == "auto":
        choice = "cuda" if torch.cuda.is_available() else "cpu"
    if choice.startswith("cuda"):
        if not torch.cuda.is_available():
            raise InputError(f"--device {choice} requested but CUDA is not available")
        if ":" in choice:
            return torch.device(choice)
        return torch.device("cuda", local_rank)
    return torch.device("cpu")


def device_type(choice: str) -> str:
    """The device type a ``--device`` choice will use (for choosing the distributed backend)."""
    return "cuda" if choice == "cuda" or (choice == "auto" and torch.cuda.is_available()) else "cpu"
