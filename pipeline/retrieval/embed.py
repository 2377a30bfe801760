"""``teachclip embed``: embed a user's own video files (no manifest, no frames.h5) into an index.

Decoding dominates (one ffmpeg process per video, single-threaded), so videos are decoded by a
pool of ``workers`` processes while the main process batches and embeds them; results are taken
in listing order (a bounded window of videos in flight), so the index's row order does not
depend on which decoder finishes first. A video that cannot be decoded is listed with ffmpeg's
reason and left out, never zero-filled.
"""

from __future__ import annotations

import functools
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import torch

from pipeline.data.sampling import SampledVideo, sample_video
from pipeline.data.video import DecodeError
from pipeline.errors import InputError
from pipeline.eval.model_eval import LoadedModel
from pipeline.models.preprocess import normalize_frames
from pipeline.precision import autocast_context
from pipeline.retrieval.index import model_attrs, require_single_vector

VIDEO_SUFFIXES = frozenset({".mp4", ".avi", ".mkv", ".webm", ".mov", ".m4v", ".mpg", ".mpeg",
                            ".wmv", ".flv", ".3gp", ".ts", ".ogv"})
Decoded = tuple[str, SampledVideo | None, str]  # (video id, frames or None, failure reason)


def list_videos(source: str | Path) -> list[tuple[str, Path]]:
    """(id, path) of a folder's video files (recursive; id = relative path without suffix) or
    of a list file (one path per line, relative to the list's folder; id = file stem)."""
    source = Path(source)
    out: list[tuple[str, Path]] = []
    if source.is_dir():
        for path in sorted(p for p in source.rglob("*") if p.is_file()):
            if path.suffix.lower() in VIDEO_SUFFIXES:
                out.append((path.relative_to(source).with_suffix("").as_posix(), path))
    elif source.is_file():
        seen: dict[str, int] = {}
        lines = source.read_text(encoding="utf-8").splitlines()
        for number, line in enumerate(lines, start=1):
            text = line.strip()
            if not text or text.startswith("#"):
                continue
            path = Path(text)
            path = path if path.is_absolute() else source.parent / path
            video_id = path.stem
            if video_id in seen:
                raise InputError(f"duplicate video id (also on line {seen[video_id]})",
                                 file=source, line=number, item_id=video_id)
            seen[video_id] = number
            out.append((video_id, path))
    else:
        raise InputError("no such folder or list file", file=source)
    if not out:
        raise InputError("no videos found", file=source)
    return out


def decode_one(item: tuple[str, Path], *, policy: str, max_frames: int, size: int,
               timeout: float, honor_sar: bool) -> Decoded:
    """Worker entry point (top level so it pickles): one video's sampled frames or the reason."""
    video_id, path = item
    try:
        sampled = sample_video(path, policy=policy, max_frames=max_frames, size=size,
                               timeout=timeout, honor_sar=honor_sar)
    except DecodeError as exc:
        return video_id, None, f"{exc.reason}: {exc.stderr_tail}" if exc.stderr_tail \
            else exc.reason
    except OSError as exc:
        return video_id, None, f"cannot read: {exc}"
    return video_id, sampled, ""


def decode_in_order(items: Iterable[tuple[str, Path]], decode: Callable[..., Decoded],
                    workers: int) -> Iterator[Decoded]:
    """``decode(item)`` for every item, in the items' order; ``workers > 1`` decodes that many
    at once in processes, keeping at most ``4 × workers`` results in flight (bounded memory)."""
    if workers <= 1:
        yield from map(decode, items)
        return
    source = iter(items)
    with ProcessPoolExecutor(max_workers=workers) as pool:
        pending: deque[Future] = deque()

        def submit_next() -> None:
            item = next(source, None)
            if item is not None:
                pending.append(pool.submit(decode, item))

        for _ in range(4 * workers):
            submit_next()
        while pending:
            result = pending.popleft().result()
            submit_next()
            yield result


@torch.no_grad()
def embed_videos(
    loaded: LoadedModel,
    videos: Sequence[tuple[str, Path]],
    device: torch.device,
    *,
    policy: str = "official",
    max_frames: int = 12,
    batch_size: int = 16,
    timeout: float = 300.0,
    amp: str = "none",
    workers: int = 1,
    honor_sar: bool = False,
    on_progress: Callable[[int], None] | None = None,
) -> tuple[list[str], np.ndarray, list[tuple[str, str]], dict[str, Any]]:
    """Decode a user's own videos with the frames policy at the model's resolution and embed them.

    Returns (ids, embeddings [N,D], failures [(id, reason)], attrs); ids keep the listing order.
    """
    require_single_vector(loaded)
    ids: list[str] = []
    parts: list[np.ndarray] = []
    failed: list[tuple[str, str]] = []
    batch: list[tuple[str, SampledVideo]] = []

    def flush() -> None:
        if not batch:
            return
        pixels = torch.from_numpy(np.stack([s.frames for _, s in batch])).to(device)
        mask = torch.from_numpy(np.stack([s.mask for _, s in batch])).to(device)
        with autocast_context(device, amp):
            emb = loaded.retriever.encode_video(normalize_frames(pixels, mask), mask)
        parts.append(emb["embedding"].float().cpu().numpy())
        ids.extend(video_id for video_id, _ in batch)
        if on_progress is not None:
            on_progress(len(batch))
        batch.clear()

    decode = functools.partial(decode_one, policy=policy, max_frames=max_frames,
                               size=loaded.image_size, timeout=timeout, honor_sar=honor_sar)
    for video_id, sampled, reason in decode_in_order(videos, decode, workers):
        if sampled is None:
            failed.append((video_id, reason))
            if on_progress is not None:
                on_progress(1)
            continue
        batch.append((video_id, sampled))
        if len(batch) >= batch_size:
            flush()
    flush()
    if not ids:
        shown = "; ".join(f"{v}: {r}" for v, r in failed[:3])
        raise InputError(f"none of {len(videos)} videos could be decoded; first: {shown}")
    attrs = {**model_attrs(loaded), "source": "videos", "frames_digest": "", "split": "",
             "sampling_policy": policy, "max_frames": max_frames,
             "resolution": loaded.image_size, "honor_sar": bool(honor_sar)}
    return ids, np.concatenate(parts), failed, attrs
