"""Options shared by stage commands, so each is spelt, typed and documented the same everywhere.

Parameter names (``frames_path``, ``manifest_dir``, ``device``, ``amp``) are what params.yaml keys
map to (``frames:``, ``manifest:``), so they must not change between commands.
"""

from __future__ import annotations

from typing import Any

import click
import torch

from pipeline.data.sampling import POLICIES
from pipeline.errors import InputError
from pipeline.precision import AMP_CHOICES

DEVICES = ("auto", "cpu", "cuda")


def resolve_device(choice: str, local_rank: int = 0) -> torch.device:
    """``auto`` → CUDA when available; under torchrun each rank takes its local GPU."""
    if choice == "auto":
        choice = "cuda" if torch.cuda.is_available() else "cpu"
    if choice.startswith("cuda"):
        if not torch.cuda.is_available():
            raise InputError(f"--device {choice} requested but CUDA is not available: use "
                             "--device cpu (or auto)")
        if ":" in choice:
            return torch.device(choice)
        return torch.device("cuda", local_rank)
    return torch.device("cpu")


def device_type(choice: str) -> str:
    """The device type a ``--device`` choice will use (for choosing the distributed backend)."""
    return "cuda" if choice == "cuda" or (choice == "auto" and torch.cuda.is_available()) else "cpu"


def frames_option(required: bool = True, help: str = "frames.h5 written by `teachclip frames`."
                  ) -> Any:
    """``--frames`` → ``frames_path``: the decoded frames every model stage reads."""
    return click.option("--frames", "frames_path", required=required, default=None,
                        type=click.Path(dir_okay=False), help=help)


def manifest_option(required: bool = True,
                    help: str = "Manifest directory (videos.csv, captions.csv).") -> Any:
    """``--manifest`` → ``manifest_dir``."""
    return click.option("--manifest", "manifest_dir", required=required, default=None,
                        type=click.Path(file_okay=False), help=help)


def amp_option(default: str = "none", help: str = "Autocast precision: bf16 or fp16 on a GPU "
               "(bf16 preferred), none = float32 (CPU).") -> Any:
    """``--amp``: mixed precision for the encoders."""
    return click.option("--amp", type=click.Choice(AMP_CHOICES), default=default,
                        show_default=True, help=help)


def policy_option(default: str = "official") -> Any:
    """``--policy``: which frames of a video are kept (pipeline.data.sampling)."""
    return click.option(
        "--policy", type=click.Choice(POLICIES), default=default, show_default=True,
        help="Frame sampling: official = the CLIP4Clip/TeachCLIP loader (1 frame per integer "
             "second, a clip's end second included, then F evenly spaced of those); "
             "exact_time = the same over the clip's real-time [start, end); uniform = F frames "
             "at the centres of F equal time bins.")


def honor_sar_option() -> Any:
    """``--honor-sar/--no-honor-sar``: correct non-square pixels before resize and crop."""
    return click.option(
        "--honor-sar/--no-honor-sar", "honor_sar", default=False, show_default=True,
        help="Stretch frames by the video's sample (pixel) aspect ratio before the short-side "
             "resize and centre crop, so anamorphic videos are not squashed. Off = the "
             "official loader's behaviour (pixels treated as square).")


#: Options shared by the serving commands (index, search, embed; --dtype: stages.index).
MODEL_OPTION = click.option(
    "--model", "model_path", required=True, type=click.Path(exists=True),
    help="Student/baseline model directory (model.pt) or checkpoint file.")
DEVICE_OPTION = click.option(
    "--device", type=click.Choice(DEVICES), default="auto", show_default=True,
    help="auto = CUDA when available, else the CPU; under torchrun each process takes its "
         "local GPU.")
BIGFILE_OPTION = click.option(
    "--bigfile", "bigfile_dir", default=None, type=click.Path(dir_okay=True),
    help="Also export the official bigfile layout to this directory.")
