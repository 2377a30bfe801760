"""X-CLIP teacher: cross-grained similarity (method §3.1, teachers §1).

The score of one (text, video) pair mixes four terms (sentence–video, video–word, sentence–frame,
frame–word) with temperature-0.01 softmaxes and eight identity-initialised "re-mix" matrices.
Because of those sharp softmaxes the score does not factorise into a dot product, so scoring is
done in vectorised blocks of texts × videos from cached per-item features.

Masking: ``official_masking=True`` reproduces the official code (no word mask: SOT/EOT/padding
positions take part; padded frames take part in z3, z4 and the relevance). The default masks
padding words and padded frames out of every softmax and every sum, while the L×L / F×F matrices
keep indexing absolute positions (so, with full-length inputs, both modes agree exactly).
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from pipeline.models.clip import ClipTowers
from pipeline.models.teachers.base import (
    DEFAULT_CHUNK_PAIRS,
    Features,
    Teacher,
    masked_softmax,
)
from pipeline.models.temporal import build_seq_transf

#: Official parameter names of the eight matrices (also their names in this module).
XCLIP_MATRICES: tuple[str, ...] = (
    "global_mat_weight",
    "word_logit_weight",
    "frame_logit_weight",
    "local_mat_weight",
    "frame_mat_weight",
    "word_mat_weight",
    "frame_mat_weight2",
    "word_mat_weight2",
)


def _normalize(x: torch.Tensor) -> torch.Tensor:
    return x / x.norm(dim=-1, keepdim=True)


def masked_mean_normalized(y: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """``normalise(Σ_f m_f ŷ_f / max(1, Σ_f m_f))``: the video-level feature v̄ (teachers §1.3)."""
    y_hat = _normalize(y)
    if mask is None:
        mask = torch.ones(y.shape[:2], dtype=y.dtype, device=y.device)
    m = mask.to(y.dtype).unsqueeze(-1)
    mean = (y_hat * m).sum(dim=1) / m.sum(dim=1).clamp(min=1.0)
    return _normalize(mean)


class XClipHead(nn.Module):
    """The eight X-CLIP matrices and the cross-grained score (identity initialisation).

    Shapes: G_g, G_l D×D; A_w, B_w, C_w L×L; A_f, B_f, C_f F×F. Inputs may be un-normalised: every
    feature is L2-normalised inside (idempotent for cached, already normalised features).
    """

    def __init__(
        self, dim: int, max_words: int, max_frames: int, temperature: float = 0.01
    ) -> None:
        super().__init__()
        self.temperature = temperature
        self.global_mat_weight = nn.Parameter(torch.eye(dim))
        self.word_logit_weight = nn.Parameter(torch.eye(max_words))
        self.frame_logit_weight = nn.Parameter(torch.eye(max_frames))
        self.local_mat_weight = nn.Parameter(torch.eye(dim))
        self.frame_mat_weight = nn.Parameter(torch.eye(max_frames))
        self.word_mat_weight = nn.Parameter(torch.eye(max_words))
        self.frame_mat_weight2 = nn.Parameter(torch.eye(max_frames))
        self.word_mat_weight2 = nn.Parameter(torch.eye(max_words))

    @property
    def max_words(self) -> int:
        return int(self.word_logit_weight.shape[0])

    @property
    def max_frames(self) -> int:
        return int(self.frame_logit_weight.shape[0])

    def _check(self, words: torch.Tensor, frames: torch.Tensor) -> None:
        if words.shape[1] != self.max_words:
            raise ValueError(
                f"X-CLIP head is built for {self.max_words} words, got {words.shape[1]}"
            )
        if frames.shape[1] != self.max_frames:
            raise ValueError(
                f"X-CLIP head is built for {self.max_frames} frames, got {frames.shape[1]}"
            )

    def score_block(
        self,
        sentence: torch.Tensor,
        words: torch.Tensor,
        word_mask: torch.Tensor | None,
        video: torch.Tensor,
        frames: torch.Tensor,
        frame_mask: torch.Tensor | None,
        scale: torch.Tensor | float,
    ) -> torch.Tensor:
        """Logits [T,V] for ALL pairs of T texts × V videos at once (no loop over pairs).

        ``sentence`` [T,D], ``words`` [T,L,D], ``word_mask`` [T,L] or None (= all words count),
        ``video`` v̄ [V,D], ``frames`` f̂ [V,F,D], ``frame_mask`` [V,F] or None, ``scale`` = λ.
        """
        self._check(words, frames)
        tau = self.temperature
        s, w, v, f = _normalize(sentence), _normalize(words), _normalize(video), _normalize(frames)
        dtype = s.dtype
        wm = None if word_mask is None else word_mask.to(dtype)
        fm = None if frame_mask is None else frame_mask.to(dtype)

        def keep(x: torch.Tensor, m: torch.Tensor | None) -> torch.Tensor:
            return x if m is None else x * m

        # z1: sentence–video bilinear.
        z1 = (s @ self.global_mat_weight) @ v.T  # [T,V]
        # z2: video–word. r[t,v,l] = ŵ_tl · v̄_v, attention over words re-mixed by A_w.
        r = torch.einsum("tld,vd->tvl", w, v)
        wm_tvl = None if wm is None else wm[:, None, :]
        a = masked_softmax(r / tau, wm_tvl, dim=-1)
        z2 = keep((a @ self.word_logit_weight) * r, wm_tvl).sum(-1)
        # z3: sentence–frame. q[t,v,f] = ŝ_t · f̂_vf, attention over frames re-mixed by A_f.
        q = torch.einsum("td,vfd->tvf", s, f)
        fm_tvf = None if fm is None else fm[None, :, :]
        b = masked_softmax(q / tau, fm_tvf, dim=-1)
        z3 = keep((b @ self.frame_logit_weight) * q, fm_tvf).sum(-1)
        # z4: frame–word on S[t,v,l,f] = ŵ_tl G_l f̂_vfᵀ.
        sim = torch.einsum("tld,vfd->tvlf", w @ self.local_mat_weight, f)
        wm_l = None if wm is None else wm[:, None, :, None]
        fm_f = None if fm is None else fm[None, :, None, :]
        alpha = masked_softmax(sim / tau, wm_l, dim=2)  # over words, per frame
        alpha_b = torch.einsum("tvif,il->tvlf", alpha, self.word_mat_weight)
        u = keep(alpha_b * sim, wm_l).sum(2)  # [T,V,F]
        beta = masked_softmax(sim / tau, fm_f, dim=3)  # over frames, per word
        g = keep((beta @ self.frame_mat_weight) * sim, fm_f).sum(3)  # [T,V,L]
        u_att = masked_softmax(u / tau, fm_tvf, dim=-1) @ self.frame_mat_weight2
        g_att = masked_softmax(g / tau, wm_tvl, dim=-1) @ self.word_mat_weight2
        z4 = 0.5 * (keep(u_att * u, fm_tvf).sum(-1) + keep(g_att * g, wm_tvl).sum(-1))
        return scale * (z1 + z2 + z3 + z4) / 4.0

    def score(
        self,
        sentence: torch.Tensor,
        words: torch.Tensor,
        word_mask: torch.Tensor | None,
        video: torch.Tensor,
        frames: torch.Tensor,
        frame_mask: torch.Tensor | None,
        scale: torch.Tensor | float,
        chunk_pairs: int = DEFAULT_CHUNK_PAIRS,
    ) -> torch.Tensor:
        """Logits [Nt,Nv] computed block-wise: each block holds ≤ ``chunk_pairs`` pairs.

        Memory per block is O(chunk_pairs·L·F); the loops run over blocks, never over pairs.
        """
        if chunk_pairs < 1:
            raise ValueError(f"chunk_pairs must be ≥ 1, got {chunk_pairs}")
        n_t, n_v = sentence.shape[0], video.shape[0]
        v_step = max(1, min(n_v, chunk_pairs))
        t_step = max(1, chunk_pairs // v_step)
        rows = []
        for t0 in range(0, n_t, t_step):
            ts = slice(t0, t0 + t_step)
            cols = []
            for v0 in range(0, n_v, v_step):
                vs = slice(v0, v0 + v_step)
                cols.append(
                    self.score_block(
                        sentence[ts],
                        words[ts],
                        None if word_mask is None else word_mask[ts],
                        video[vs],
                        frames[vs],
                        None if frame_mask is None else frame_mask[vs],
                        scale,
                    )
                )
            rows.append(torch.cat(cols, dim=1))
        if not rows:
            return sentence.new_zeros(n_t, n_v)
        return torch.cat(rows, dim=0)


class XClipTeacher(Teacher):
    """X-CLIP = CLIP + seqTransf + ``XClipHead`` (method §3.1).

    Features: text → ``sentence`` ŝ [N,D], ``words`` ŵ [N,L,D], ``word_mask`` [N,L]; video →
    ``video`` v̄ [N,D] (seqTransf, masked mean), ``frames`` f̂ [N,F,D] (pre-temporal CLIP frames),
    ``frame_mask`` [N,F]. All normalised, so a cache can store them as they are.
    """

    kind: ClassVar[str] = "xclip"

    def __init__(
        self,
        towers: ClipTowers,
        max_words: int,
        max_frames: int,
        *,
        temporal_layers: int = 4,
        temporal_heads: int | None = None,
        official_masking: bool = False,
        temperature: float = 0.01,
        relevance_temperature: float = 1.0,
        init_temporal_from_clip: bool = True,
    ) -> None:
        super().__init__(towers, max_words, max_frames)
        self.temporal_layers = temporal_layers
        self.official_masking = official_masking
        self.relevance_temperature = relevance_temperature
        self.temporal = build_seq_transf(
            towers, temporal_layers, temporal_heads, init_from_clip=init_temporal_from_clip
        )
        self.head = XClipHead(towers.embed_dim, max_words, max_frames, temperature)

    def config_dict(self) -> dict[str, Any]:
        return {
            "max_words": self.max_words,
            "max_frames": self.max_frames,
            "temporal_layers": self.temporal_layers,
            "temporal_heads": self.temporal.heads,
            "official_masking": self.official_masking,
            "temperature": self.head.temperature,
            "relevance_temperature": self.relevance_temperature,
            # Weights come from the checkpoint: re-initialising from CLIP would be wasted work.
            "init_temporal_from_clip": False,
        }

    def encode_text(self, ids: torch.Tensor, mask: torch.Tensor) -> Features:
        sentence, tokens = self.clip.encode_text(ids)
        return {
            "sentence": F.normalize(sentence, dim=-1),
            "words": F.normalize(tokens, dim=-1),
            "word_mask": mask.to(tokens.dtype),
        }

    def encode_video(self, frames: torch.Tensor, video_mask: torch.Tensor) -> Features:
        x = self.clip.encode_frames(frames)
        mask = video_mask.to(x.dtype)
        y = self.temporal(x, mask)
        return {
            "video": masked_mean_normalized(y, mask),
            "frames": F.normalize(x, dim=-1),
            "frame_mask": mask,
        }

    def score(
        self,
        text_feats: Features,
        video_feats: Features,
        chunk_pairs: int = DEFAULT_CHUNK_PAIRS,
    ) -> torch.Tensor:
        official = self.official_masking
        return self.head.score(
            text_feats["sentence"],
            text_feats["words"],
            None if official else text_feats["word_mask"],
            video_feats["video"],
            video_feats["frames"],
            None if official else video_feats["frame_mask"],
            self.clip.logit_scale.exp(),
            chunk_pairs=chunk_pairs,
        )

    def relevance_logits(
        self, text_feats: Features, video_feats: Features
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``ŝ_i · f̂_{i,f}`` (no temperature by default: official), positive pairs only."""
        s = F.normalize(text_feats["sentence"], dim=-1)
        f = F.normalize(video_feats["frames"], dim=-1)
        logits = torch.einsum("nd,nfd->nf", s, f) / self.relevance_temperature
        mask = video_feats["frame_mask"]
        if self.official_masking:
            mask = torch.ones_like(mask)
        return logits, mask
