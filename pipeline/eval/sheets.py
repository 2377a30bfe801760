"""Contact sheets: retrieved videos as frames, and frame relevance drawn over a video's frames.

Why pictures: whether a ranking is right, or whether a teacher's frame relevance picks the frames
a caption talks about, is judged by looking at the videos, not at ids and scores. These functions
take plain arrays (frames uint8 [n, H, W, 3], weights [F]) so that the search command (index
layer) and the cache command (cache layer) share them without knowing each other.
"""

from __future__ import annotations

import textwrap
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pipeline.errors import InputError
from pipeline.eval.plots import pyplot, save_png

#: Bar colours of the relevance sheet: the teacher's R, then the student's AFA weights.
SERIES_COLOURS = ("#ff7f0e", "#1f77b4", "#2ca02c", "#9467bd")
PAD_GREY = 0.85


def pick_frames(mask: np.ndarray, n: int) -> np.ndarray:
    """Indices of ``n`` real frames spread evenly over the video (all of them if fewer)."""
    real = np.flatnonzero(np.asarray(mask, dtype=bool))
    if len(real) <= n:
        return real
    return real[np.linspace(0, len(real) - 1, num=n).round().astype(np.int64)]


@dataclass
class SheetRow:
    """One row of a contact sheet: a label and a few frames (uint8 [n, H, W, 3])."""

    label: str
    frames: np.ndarray
    frame_labels: Sequence[str] = ()


def contact_sheet(rows: Sequence[SheetRow], path: str | Path, title: str,
                  cell_inches: float = 1.3) -> Path:
    """One row per item (e.g. a search hit): its label on the left, its frames to the right."""
    plt = pyplot()
    if not rows:
        raise InputError("nothing to draw: no rows for the contact sheet")
    cols = max(1, max(len(r.frames) for r in rows))
    fig, axes = plt.subplots(len(rows), cols + 1, squeeze=False,
                             figsize=(cell_inches * (cols + 1.4), cell_inches * len(rows) + 0.7),
                             gridspec_kw={"width_ratios": [1.4] + [1] * cols})
    for axis_row, row in zip(axes, rows, strict=True):
        label_ax = axis_row[0]
        label_ax.axis("off")
        label_ax.text(0.98, 0.5, row.label, ha="right", va="center", fontsize=8,
                      family="monospace", transform=label_ax.transAxes)
        for j, ax in enumerate(axis_row[1:]):
            ax.set_xticks([])
            ax.set_yticks([])
            if j < len(row.frames):
                ax.imshow(row.frames[j], interpolation="nearest")
                if j < len(row.frame_labels):
                    ax.set_xlabel(row.frame_labels[j], fontsize=7, labelpad=1)
            else:
                ax.axis("off")
    fig.suptitle("\n".join(textwrap.wrap(title, 90)), fontsize=9)
    fig.tight_layout(rect=(0, 0, 1, 0.97), h_pad=0.6, w_pad=0.2)
    return save_png(fig, path)


def relevance_sheet(frames: np.ndarray, mask: np.ndarray, series: Mapping[str, np.ndarray],
                    path: str | Path, title: str,
                    timestamps: np.ndarray | None = None) -> Path:
    """A video's F frames with the first weight series drawn over them, every series as bars.

    ``series`` maps a name ("teacher relevance R", "student AFA weights") to F weights that sum
    to 1 over the real frames. Over the frames, the first series dims each frame by how far its
    weight is below the largest one (the favoured frames stay bright) and prints the weight in
    the corner; beneath, one bar per series and frame. Padded frames are grey and marked.
    """
    plt = pyplot()
    n_frames = int(len(mask))
    if not series or any(len(w) != n_frames for w in series.values()):
        raise InputError(f"each weight series must have one value per frame ({n_frames})")
    names = list(series)
    first = np.asarray(series[names[0]], dtype=np.float64)
    peak = float(first.max()) or 1.0
    fig = plt.figure(figsize=(max(6.0, 1.15 * n_frames), 3.9))
    grid = fig.add_gridspec(2, n_frames, height_ratios=[1, 1.1], hspace=0.35, wspace=0.05)
    for f in range(n_frames):
        ax = fig.add_subplot(grid[0, f])
        ax.set_xticks([])
        ax.set_yticks([])
        if not mask[f]:
            ax.imshow(np.full((8, 8, 3), PAD_GREY), vmin=0, vmax=1)
            ax.text(0.5, 0.5, "pad", ha="center", va="center", transform=ax.transAxes,
                    fontsize=8)
            continue
        ax.imshow(frames[f], interpolation="nearest", extent=(0, 1, 0, 1))
        ax.add_patch(plt.Rectangle((0, 0), 1, 1, color="black", linewidth=0,
                                   alpha=0.6 * (1.0 - first[f] / peak)))
        ax.text(0.04, 0.04, f"{first[f]:.2f}", color="white", fontsize=7, fontweight="bold",
                transform=ax.transAxes, bbox={"facecolor": SERIES_COLOURS[0], "alpha": 0.8,
                                              "pad": 1, "linewidth": 0})
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1)
        if timestamps is not None and np.isfinite(timestamps[f]):
            ax.set_title(f"{timestamps[f]:.1f} s", fontsize=7, pad=2)
    bars = fig.add_subplot(grid[1, :])
    width = 0.8 / len(names)
    x = np.arange(n_frames)
    for s, name in enumerate(names):
        bars.bar(x - 0.4 + (s + 0.5) * width, series[name], width=width, label=name,
                 color=SERIES_COLOURS[s % len(SERIES_COLOURS)])
    bars.set_xlim(-0.5, n_frames - 0.5)
    bars.set_xticks(x, [str(i) if mask[i] else f"{i} (pad)" for i in x], fontsize=7)
    bars.set_xlabel("frame (dimmed above: lower " + names[0] + ")", fontsize=8)
    bars.set_ylabel("weight", fontsize=8)
    bars.legend(fontsize=7, frameon=False, loc="upper right")
    bars.grid(axis="y", alpha=0.3)
    fig.suptitle("\n".join(textwrap.wrap(title, 110)), fontsize=9)
    fig.subplots_adjust(left=0.06, right=0.98, top=0.84, bottom=0.12)
    return save_png(fig, path)
