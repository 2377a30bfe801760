"""Small option helpers shared by stage commands."""

from __future__ import annotations

import click
import torch

from pipeline.errors import InputError
from pipeline.retrieval.index import DTYPES


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


#: Options shared by the serving commands (index, search, embed).
MODEL_OPTION = click.option(
    "--model", "model_path", required=True, type=click.Path(exists=True),
    help="Student/baseline model directory (model.pt) or checkpoint file.")
DEVICE_OPTION = click.option(
    "--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto", show_default=True,
    help="auto = CUDA when available, else the CPU.")
DTYPE_OPTION = click.option(
    "--dtype", type=click.Choice(DTYPES), default="float32", show_default=True,
    help="Storage type of the embeddings.")
BIGFILE_OPTION = click.option(
    "--bigfile", "bigfile_dir", default=None, type=click.Path(dir_okay=True),
    help="Also export the official bigfile layout to this directory.")
