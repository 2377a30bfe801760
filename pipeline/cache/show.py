"""``cache show``: one caption's teacher soft labels, next to its video's frames.

Why: the fine-grained part of the TeachCLIP loss pulls the student's AFA frame weights towards
the teacher's frame relevance R = softmax(relevance logits) over the caption's own video. Whether
R is worth distilling is seen by looking at which frames it favours, and whether the student
learnt it by putting its AFA weights beside it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from pipeline.cache.reader import TeacherCache
from pipeline.errors import InputError, MismatchError
from pipeline.eval.model_eval import LoadedModel, check_frames_fit
from pipeline.models.preprocess import normalize_frames


@dataclass
class CaptionRelevance:
    """The cache's view of one caption: its video, its score and rank there, and R over frames."""

    caption_id: str
    video_id: str
    teacher_kind: str
    logits: np.ndarray  # [F] relevance logits as stored
    mask: np.ndarray  # [F] frames that take part
    relevance: np.ndarray  # [F] softmax over the masked frames (0 on padding)
    own_score: float  # teacher logit of the caption with its own video
    own_rank: int  # 1-based rank of the own video among the cache's videos (ties count against)
    n_videos: int


def masked_softmax_np(logits: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """softmax over entries where ``mask`` is true; masked entries exactly 0."""
    mask = np.asarray(mask, dtype=bool)
    out = np.zeros(logits.shape, dtype=np.float64)
    if not mask.any():
        return out
    real = logits[mask].astype(np.float64)
    exp = np.exp(real - real.max())
    out[mask] = exp / exp.sum()
    return out


def caption_relevance(cache: TeacherCache, caption_id: str) -> CaptionRelevance:
    """R and the own-video score of ``caption_id``; InputError naming the id when it is absent."""
    row = int(cache.row_of_caption([caption_id])[0])
    col = int(cache.caption_video[row])
    sim, logits, mask = cache.batch([row], np.arange(cache.n_videos))
    temperature = float(cache.attrs.get("relevance_temperature", 1.0))
    scaled = logits[0].astype(np.float64) / temperature
    own = float(sim[0, col])
    return CaptionRelevance(
        caption_id=str(caption_id), video_id=cache.video_ids[col],
        teacher_kind=str(cache.attrs.get("teacher_kind", "?")), logits=logits[0],
        mask=mask[0], relevance=masked_softmax_np(scaled, mask[0]), own_score=own,
        own_rank=int((sim[0] >= own).sum()), n_videos=cache.n_videos,
    )


def video_frames(cache: TeacherCache, frames: Any, video_id: str
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(pixels uint8 [F,H,W,3], mask [F], timestamps [F]) of ``video_id`` from the frames.h5 the
    cache was scored on (another frames file would put R over the wrong frames)."""
    expected = cache.attrs.get("frames_digest")
    if expected is not None and str(expected) != str(frames.digest):
        raise MismatchError("frames digest (cache scored on vs --frames): give the frames.h5 "
                            "the cache was scored on", expected, frames.digest,
                            file=getattr(frames, "path", None))
    if int(frames.max_frames) != cache.F:
        raise MismatchError("frames per video (F) of cache vs frames.h5", cache.F,
                            int(frames.max_frames), file=getattr(frames, "path", None))
    try:
        row = frames.row_of(video_id)
    except KeyError:
        raise InputError("video is not in the frames file", file=frames.path,
                         item_id=video_id) from None
    pixels, mask = frames.read([row])
    return pixels[0], mask[0], frames.timestamps([row])[0]


@torch.no_grad()
def student_frame_weights(loaded: LoadedModel, frames: Any, pixels: np.ndarray,
                          mask: np.ndarray, device: torch.device) -> np.ndarray:
    """The student's AFA frame weights softmax(w) [F] (the quantity distilled towards R)."""
    model = loaded.model
    if loaded.kind != "student" or getattr(model, "afa", None) is None:
        what = "a student with mean aggregation" if loaded.kind == "student" else loaded.kind
        raise InputError(f"--student must be a student with AFA aggregation; this model is "
                         f"{what} and has no frame weights to compare", file=loaded.path)
    check_frames_fit(loaded, frames)
    pixels_t = torch.from_numpy(np.ascontiguousarray(pixels[None])).to(device)
    mask_t = torch.from_numpy(np.asarray(mask[None], dtype=bool)).to(device)
    out = model.encode_video(normalize_frames(pixels_t, mask_t), mask_t)
    return out.frame_weights[0].float().cpu().numpy().astype(np.float64)
