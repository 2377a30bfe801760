"""Cross-fitting folds of the train split: which teacher may score which caption.

Why: a teacher that scores its own training captions has fitted them, so its soft labels approach
the hard labels and carry little beyond the ground truth. With ``K`` folds, fold teacher ``k``
trains on every train video *not* in fold ``k`` and scores only the captions of fold ``k``'s
videos, so every soft label comes from a teacher that never saw that caption or its video.

Folds are over videos (all captions of a video share its fold), balanced (sizes differ by at most
one) and a pure function of the manifest's train video ids, so ``teacher train --fold`` and
``teacher score --fold-model`` agree without passing an assignment around.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import numpy as np

from pipeline.data.manifest import Manifest
from pipeline.errors import InputError

#: Where a cross-fitted teacher's fold models live inside its model directory.
FOLDS_DIR = "folds"
#: Fixed seed of the fold permutation (a change would re-assign every fold of every lab).
FOLD_SEED = 20240613


def check_fold(folds: int, fold: int) -> None:
    """Refuse a fold setting that cannot exist (``folds == 0`` means no cross-fitting)."""
    if folds == 0:
        if fold != 0:
            raise InputError(f"--fold {fold} needs --folds K (K >= 2)")
        return
    if folds < 2:
        raise InputError(f"--folds must be 0 (off) or >= 2, got {folds}")
    if not 0 <= fold < folds:
        raise InputError(f"--fold must be in 0..{folds - 1} for --folds {folds}, got {fold}")


def video_folds(video_ids: Iterable[str], folds: int) -> dict[str, int]:
    """Fold of every video: a seeded permutation of the sorted ids, dealt round-robin."""
    ordered = sorted({str(v) for v in video_ids})
    if len(ordered) < folds:
        raise InputError(f"{folds} folds need at least {folds} train videos, got {len(ordered)}")
    perm = np.random.default_rng(FOLD_SEED).permutation(len(ordered))
    return {ordered[int(i)]: rank % folds for rank, i in enumerate(perm)}


def train_folds(manifest: Manifest, folds: int) -> dict[str, int]:
    """Fold of every train video of ``manifest``."""
    return video_folds(manifest.split("train").videos["video_id"], folds)


def without_fold(manifest: Manifest, folds: int, fold: int) -> Manifest:
    """``manifest`` with fold ``fold``'s train videos and their captions removed (other splits
    untouched): what fold teacher ``fold`` trains on."""
    check_fold(folds, fold)
    assignment = train_folds(manifest, folds)
    held_out = {v for v, k in assignment.items() if k == fold}
    videos = manifest.videos[~manifest.videos["video_id"].isin(held_out)]
    captions = manifest.captions[~manifest.captions["video_id"].isin(held_out)]
    return Manifest(videos, captions, manifest.root)


def fold_model_dirs(model_dir: str | Path, folds: int) -> list[Path]:
    """``<model_dir>/folds/0 … K-1``: the fold teachers ``teacher train --cross-fit K`` trains
    beside the teacher (and ``teacher score`` reads by default)."""
    return [Path(model_dir) / FOLDS_DIR / str(k) for k in range(folds)]
