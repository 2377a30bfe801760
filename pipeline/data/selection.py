"""Which captions of a split can be used: those whose video made it into frames.h5.

Why one function: training (teachers, students), scoring and evaluation all select "captions of a
split whose video decoded"; written three times, the three copies could disagree on order or on
what counts as dropped, and ids would no longer line up between a cache and its student.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pandas as pd

from pipeline.data.manifest import Manifest


@dataclass
class SplitSelection:
    """A split restricted to decoded videos (both in manifest order)."""

    video_ids: list[str]  # videos of the split present in frames.h5
    captions: pd.DataFrame  # their captions (caption_id, video_id, split, text)
    dropped_captions: int  # captions whose video is absent from frames.h5 (failed to decode)


def select_split(manifest: Manifest, frames: Any, split: str) -> SplitSelection:
    """Captions and videos of ``split`` whose video is in ``frames`` (anything with
    ``.video_ids``, e.g. :class:`pipeline.data.frames_store.FramesReader`)."""
    part = manifest.split(split)
    present = set(frames.video_ids)
    video_ids = [str(v) for v in part.videos["video_id"] if v in present]
    keep = part.captions["video_id"].isin(present)
    return SplitSelection(video_ids, part.captions[keep], int((~keep).sum()))
