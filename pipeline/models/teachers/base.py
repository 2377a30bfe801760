"""The interface every teacher implements (ARCHITECTURE.md "Models", method §3).

Why split scoring into per-text features, per-video features and a pairwise ``score``: every
teacher score is a function of one (text, video) pair, so the scoring stage encodes each text and
each video once, caches the feature dicts, and scores any Nt×Nv block from the cache. Training
uses the same three pieces through ``forward``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

import torch
from torch import nn

from pipeline.models.clip import ClipTowers, build_param_groups

Features = dict[str, torch.Tensor]

#: Default pair budget of one scoring block (texts × videos computed at once). Bounded memory:
#: X-CLIP holds a few [pairs, L, F] float tensors per block.
DEFAULT_CHUNK_PAIRS = 4096


class Teacher(nn.Module):
    """Base class: a CLIP (``self.clip``) plus a pairwise similarity head.

    Subclasses set ``kind`` and implement ``encode_text``, ``encode_video``, ``score``,
    ``relevance_logits`` and ``config_dict``. Feature dicts hold tensors whose first dimension is
    the item (text or video) index, so ``slice_features`` / ``cat_features`` work on any teacher.
    """

    kind: ClassVar[str] = ""

    def __init__(self, towers: ClipTowers, max_words: int, max_frames: int) -> None:
        super().__init__()
        self.clip = towers
        self.max_words = max_words
        self.max_frames = max_frames

    # ------------------------------------------------------------------ to implement
    def encode_text(self, ids: torch.Tensor, mask: torch.Tensor) -> Features:
        """Per-text features (e.g. sentence and word features), each [N, ...]."""
        raise NotImplementedError

    def encode_video(self, frames: torch.Tensor, video_mask: torch.Tensor) -> Features:
        """Per-video features from normalised frames [N,F,3,H,W] and ``video_mask`` [N,F]."""
        raise NotImplementedError

    def score(
        self,
        text_feats: Features,
        video_feats: Features,
        chunk_pairs: int = DEFAULT_CHUNK_PAIRS,
    ) -> torch.Tensor:
        """λ-scaled logits [Nt,Nv] (rows = texts), computed in blocks of ≤ ``chunk_pairs``."""
        raise NotImplementedError

    def relevance_logits(
        self, text_feats: Features, video_feats: Features
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Pre-softmax frame scores [N,F] of text i with video i, and the mask [N,F] to use."""
        raise NotImplementedError

    def config_dict(self) -> dict[str, Any]:
        """Constructor options (JSON-able, no CLIP) so checkpoints can rebuild the model."""
        raise NotImplementedError

    # ------------------------------------------------------------------ shared
    def forward(
        self,
        ids: torch.Tensor,
        mask: torch.Tensor,
        frames: torch.Tensor,
        video_mask: torch.Tensor,
    ) -> torch.Tensor:
        """In-batch [B,B] training logits (symmetric InfoNCE: ``pipeline.train.losses``)."""
        return self.score(self.encode_text(ids, mask), self.encode_video(frames, video_mask))

    def relevance(self, text_feats: Features, video_feats: Features) -> torch.Tensor:
        """Teacher frame relevance R [N,F]: masked softmax of ``relevance_logits``."""
        logits, rel_mask = self.relevance_logits(text_feats, video_feats)
        return masked_softmax(logits, rel_mask, dim=-1)

    def param_groups(self, lr: float, coef_lr: float, weight_decay: float) -> list[dict[str, Any]]:
        """CLIP at ``lr·coef_lr``, the head at ``lr``; no decay on biases/norms/embeddings."""
        return build_param_groups(
            self.named_parameters(), lr=lr, coef_lr=coef_lr, weight_decay=weight_decay
        )


def masked_softmax(logits: torch.Tensor, mask: torch.Tensor | None, dim: int = -1) -> torch.Tensor:
    """Softmax over ``dim`` where ``mask`` is 1; masked entries get exactly 0.

    Why a large negative fill rather than ``-inf``: a row with no valid entry then becomes uniform
    instead of NaN, which keeps degenerate inputs (an all-padding row) from poisoning a batch.
    """
    if mask is None:
        return torch.softmax(logits, dim=dim)
    valid = mask.to(torch.bool)
    filled = logits.masked_fill(~valid, torch.finfo(logits.dtype).min)
    probs = torch.softmax(filled, dim=dim)
    # exp(min - max) underflows to 0 already; the explicit zero guards rows that were all masked.
    any_valid = valid.any(dim=dim, keepdim=True)
    return torch.where(valid | ~any_valid, probs, torch.zeros_like(probs))


def slice_features(feats: Features, rows: Sequence[int] | torch.Tensor | slice) -> Features:
    """Select items ``rows`` (indices or a slice, dim 0) from every tensor of a feature dict."""
    if isinstance(rows, slice):
        return {k: v[rows] for k, v in feats.items()}
    index = torch.as_tensor(rows, dtype=torch.long)
    return {k: v[index.to(v.device)] for k, v in feats.items()}


def cat_features(parts: Sequence[Features]) -> Features:
    """Concatenate feature dicts along dim 0 (keys must agree)."""
    if not parts:
        raise ValueError("cat_features needs at least one feature dict")
    keys = list(parts[0])
    for part in parts[1:]:
        if list(part) != keys and set(part) != set(keys):
            raise ValueError(f"feature keys differ: {sorted(keys)} vs {sorted(part)}")
    return {k: torch.cat([p[k] for p in parts], dim=0) for k in keys}
