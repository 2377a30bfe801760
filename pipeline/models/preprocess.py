"""Pixel normalisation of cached uint8 frames (method §5 "Pixels").

Why on the model's device and not in the frame cache: ``frames.h5`` stores uint8 (4× smaller than
float), and the normalisation is a cheap elementwise op best done on the accelerator.
"""

from __future__ import annotations

import functools

import torch

#: OpenAI CLIP pixel statistics (RGB).
CLIP_MEAN: tuple[float, float, float] = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD: tuple[float, float, float] = (0.26862954, 0.26130258, 0.27577711)


@functools.lru_cache(maxsize=16)
def _stats(mean: tuple[float, float, float], std: tuple[float, float, float],
           dtype: torch.dtype, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean/std tensors, built once per device and dtype.

    Why cached: building them from Python floats is a blocking host-to-device copy, the only
    host-device sync that was left in a CUDA training step.
    """
    m = torch.tensor(mean, dtype=dtype, device=device).view(1, 1, 3, 1, 1)
    s = torch.tensor(std, dtype=dtype, device=device).view(1, 1, 3, 1, 1)
    return m, s


def normalize_frames(
    frames: torch.Tensor,
    mask: torch.Tensor,
    *,
    dtype: torch.dtype = torch.float32,
    mean: tuple[float, float, float] = CLIP_MEAN,
    std: tuple[float, float, float] = CLIP_STD,
) -> torch.Tensor:
    """uint8 [B,F,H,W,3] → float [B,F,3,H,W] with CLIP mean/std; padded frames exactly 0.

    Padded frames are zero AFTER normalisation, as in the official loader (which fills a zero
    tensor with the normalised real frames), whatever their stored pixels are.
    """
    if frames.dim() != 5 or frames.shape[-1] != 3:
        raise ValueError(f"expected frames [B,F,H,W,3], got shape {tuple(frames.shape)}")
    if mask.shape != frames.shape[:2]:
        raise ValueError(
            f"mask shape {tuple(mask.shape)} does not match frames {tuple(frames.shape[:2])}"
        )
    x = frames.permute(0, 1, 4, 2, 3).to(dtype) / 255.0
    m, s = _stats(mean, std, dtype, x.device)
    x = (x - m) / s
    keep = mask.to(device=x.device, dtype=torch.bool).view(*mask.shape, 1, 1, 1)
    return torch.where(keep, x, torch.zeros((), dtype=dtype, device=x.device))
