"""``search --sheet``: the top-k hits of a query as a contact sheet (a few frames per video).

Where the frames come from: an index stores one vector per video, not pixels, so the sheet reads
them from a frames.h5 that holds the hits (usually the one the index was built from; any
frames.h5 with the same video ids works, e.g. a higher-resolution one made for looking), or
decodes them from the video files (``teachclip embed`` indexes have no frames.h5).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.data.sampling import sample_video
from pipeline.data.video import DecodeError
from pipeline.errors import InputError
from pipeline.eval.sheets import SheetRow, contact_sheet, pick_frames
from pipeline.retrieval.embed import list_videos
from pipeline.retrieval.index import SearchHit

#: Side (pixels) of frames decoded from video files for a sheet.
SHEET_DECODE_SIZE = 96


def _label(hit: SearchHit) -> str:
    return f"#{hit.rank}  {hit.video_id}\nscore {hit.score:+.3f}"


def rows_from_frames(hits: Sequence[SearchHit], frames: Any, per_video: int) -> list[SheetRow]:
    """Sheet rows read from a frames.h5 (``FramesReader``); every hit must be in it."""
    rows = []
    for hit in hits:
        try:
            row = frames.row_of(hit.video_id)
        except KeyError:
            raise InputError("hit is not in the frames file: give the frames.h5 the index was "
                             "built from (or --videos with the video files)",
                             file=frames.path, item_id=hit.video_id) from None
        pixels, mask = frames.read([row])
        stamps = frames.timestamps([row])[0]
        keep = pick_frames(mask[0], per_video)
        rows.append(SheetRow(_label(hit), pixels[0][keep],
                             [f"{stamps[i]:.1f} s" if np.isfinite(stamps[i]) else ""
                              for i in keep]))
    return rows


def rows_from_videos(hits: Sequence[SearchHit], videos: str | Path, per_video: int,
                     timeout: float = 300.0) -> list[SheetRow]:
    """Sheet rows decoded from the video files (folder or list, as ``teachclip embed`` takes)."""
    paths = dict(list_videos(videos))
    rows = []
    for hit in hits:
        if hit.video_id not in paths:
            raise InputError("hit has no video file here: give the folder or list the index "
                             "was embedded from", file=videos, item_id=hit.video_id)
        try:
            sampled = sample_video(paths[hit.video_id], policy="uniform", max_frames=per_video,
                                   size=SHEET_DECODE_SIZE, timeout=timeout)
        except DecodeError as exc:
            raise InputError(f"cannot decode the hit's video: {exc}", file=paths[hit.video_id],
                             item_id=hit.video_id) from exc
        keep = pick_frames(sampled.mask, per_video)
        stamps = sampled.timestamps
        rows.append(SheetRow(_label(hit), sampled.frames[keep],
                             [f"{stamps[i]:.1f} s" if stamps is not None
                              and np.isfinite(stamps[i]) else "" for i in keep]))
    return rows


def search_sheet(query: str, hits: Sequence[SearchHit], path: str | Path, *,
                 frames: Any = None, videos: str | Path | None = None,
                 per_video: int = 4) -> Path:
    """Draw the hits of ``query`` (rank, id, score, ``per_video`` frames each) into ``path``."""
    if (frames is None) == (videos is None):
        raise InputError("--sheet needs the videos' pixels: give --frames FRAMES.h5 (e.g. the "
                         "one the index was built from) or --videos DIR|LIST, not both")
    if per_video < 1:
        raise InputError(f"--sheet-frames must be at least 1, got {per_video}")
    if not hits:
        raise InputError("no hits to draw")
    rows = (rows_from_frames(hits, frames, per_video) if frames is not None
            else rows_from_videos(hits, videos, per_video))  # type: ignore[arg-type]
    return contact_sheet(rows, path, title=f"query: {query!r} — top {len(hits)}")
