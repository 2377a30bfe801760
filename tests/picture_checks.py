"""Checks that a picture the pipeline drew is a real, non-blank PNG of a sensible size."""

from __future__ import annotations

from pathlib import Path

import numpy as np

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def assert_picture(path: Path, *, min_width: int = 300, min_height: int = 150,
                   max_bytes: int = 2_000_000) -> np.ndarray:
    """Decode ``path`` with matplotlib and check it is a PNG that shows something.

    Not blank means: pixel values vary (std), and at least 1 % of the pixels differ clearly from
    the background colour (the most common one). Returns the RGB array for further checks.
    """
    import matplotlib.image as mpimg

    data = path.read_bytes()
    assert data[:8] == PNG_MAGIC, f"{path} is not a PNG"
    assert 1_000 < len(data) < max_bytes, f"{path}: {len(data)} bytes"
    image = mpimg.imread(path)[..., :3]
    height, width = image.shape[:2]
    assert width >= min_width and height >= min_height, (width, height)
    assert float(image.std()) > 0.02, f"{path} looks blank (std {image.std():.4f})"
    flat = image.reshape(-1, 3)
    colours, counts = np.unique(np.round(flat * 255).astype(np.int32), axis=0,
                                return_counts=True)
    background = colours[np.argmax(counts)] / 255.0
    differs = np.abs(flat - background).max(axis=1) > 0.1
    assert differs.mean() > 0.01, f"{path}: only {differs.mean():.2%} of pixels drawn"
    return image


def colour_fraction(image: np.ndarray, rgb: tuple[float, float, float], tol: float = 0.06
                    ) -> float:
    """Share of pixels within ``tol`` of colour ``rgb`` (values 0..1)."""
    diff = np.abs(image[..., :3] - np.asarray(rgb, dtype=np.float32)).max(axis=-1)
    return float((diff < tol).mean())
