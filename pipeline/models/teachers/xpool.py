"""X-Pool teacher (method §3.3, teachers §3): text-conditioned pooling of frame features.

Per text ``t`` (raw EOT feature) and video frames ``x_f``: a shared LN₁, single-head cross
attention ``a_f = softmax_f(k_f·q/τ)`` (τ = √D), ``o = W_o Σ a_f val_f + b_o``,
``p = LN₃(LN₂(o) + Dropout(W_lin LN₂(o) + b_lin))`` and the score ``λ·t̂·p̂``.

Differences from the official code, on purpose:
- any F (official: hard-coded 12) and padded frames get no attention (official: no masks; the
  ``official_masking`` switch restores that);
- scoring uses the exact O(F·D)-per-pair reduction of teachers §3.6 (``reduced=True``): because
  Σ a_f = 1, ``W_o`` and ``W_lin·diag(γ₂)`` are applied once per frame instead of once per pair,
  which removes the two D×D products per pair (20× fewer MACs for D=512, F=12). The direct form
  is kept (``pool_direct``) as the reference and for ``reduced=False``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from pipeline.models.clip import ClipTowers, load_clip, load_hf_state_dict
from pipeline.models.convert import hf_state_dict_to_openai, openai_state_dict_to_hf
from pipeline.models.teachers.base import DEFAULT_CHUNK_PAIRS, Features, Teacher
from pipeline.models.teachers.ts2net import score_by_blocks


class CrossAttention(nn.Module):
    """Single-head cross attention projections (official ``MultiHeadedAttention`` names)."""

    def __init__(self, width: int) -> None:
        super().__init__()
        self.q_proj = nn.Linear(width, width)
        self.k_proj = nn.Linear(width, width)
        self.v_proj = nn.Linear(width, width)
        self.out_proj = nn.Linear(width, width)


class PoolFrames(nn.Module):
    """X-Pool's ``pool_frames`` parameters; names match the released checkpoints.

    Every linear layer starts as the identity with zero bias (official ``_init_parameters``), so
    at initialisation the pooled video is an LN'd attention-weighted mean of LN₁'d frames.
    """

    def __init__(self, width: int, dropout: float = 0.3) -> None:
        super().__init__()
        self.cross_attn = CrossAttention(width)
        self.linear_proj = nn.Linear(width, width)
        self.layer_norm1 = nn.LayerNorm(width)
        self.layer_norm2 = nn.LayerNorm(width)
        self.layer_norm3 = nn.LayerNorm(width)
        self.dropout = nn.Dropout(dropout)
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.eye_(module.weight)
                nn.init.zeros_(module.bias)


def attention_logits(query: Tensor, keys: Tensor, temperature: float) -> Tensor:
    """``k_f·q/τ`` for every text × video × frame: ``[Nt,D] × [Nv,F,D] → [Nt,Nv,F]``."""
    nv, nf, d = keys.shape
    return (query @ keys.reshape(nv * nf, d).T).view(query.shape[0], nv, nf) / temperature


def masked_attention(logits: Tensor, mask: Tensor) -> Tensor:
    """Softmax over frames where ``mask`` [Nv,F] is 1 (masked frames get exactly 0)."""
    valid = mask.to(torch.bool).unsqueeze(0)
    weights = torch.softmax(logits.masked_fill(~valid, torch.finfo(logits.dtype).min), dim=-1)
    return weights * valid.to(weights.dtype)


def pool_direct(pool: PoolFrames, attn: Tensor, values: Tensor) -> Tensor:
    """Pooled video per pair, direct form: ``attn`` [Nt,Nv,F], ``values`` = W_o val [Nv,F,D]."""
    o = torch.einsum("tvf,vfd->tvd", attn, values) + pool.cross_attn.out_proj.bias
    e = pool.layer_norm2(o)
    return pool.layer_norm3(e + pool.dropout(pool.linear_proj(e)))


def pool_reduced(pool: PoolFrames, attn: Tensor, values: Tensor, lin_values: Tensor) -> Tensor:
    """Same as :func:`pool_direct` with O(F·D) per pair (teachers §3.6).

    ``lin_values`` = ``W_lin(γ₂ ⊙ u_f)`` per frame. With μ, s the LN₂ statistics of o:
    ``W_lin LN₂(o) = (Σ_f a_f W_lin(γ₂⊙u_f) + W_lin(γ₂⊙b_o) − μ·W_lin γ₂)/s + W_lin β₂``.
    """
    ln2 = pool.layer_norm2
    w_lin = pool.linear_proj.weight
    b_o = pool.cross_attn.out_proj.bias
    gamma = ln2.weight
    o = torch.einsum("tvf,vfd->tvd", attn, values) + b_o
    mu = o.mean(dim=-1, keepdim=True)
    inv = torch.rsqrt(o.var(dim=-1, unbiased=False, keepdim=True) + ln2.eps)
    e = (o - mu) * inv * gamma + ln2.bias
    mixed = torch.einsum("tvf,vfd->tvd", attn, lin_values)
    lin = (mixed + w_lin @ (gamma * b_o) - mu * (w_lin @ gamma)) * inv
    lin = lin + w_lin @ ln2.bias + pool.linear_proj.bias
    return pool.layer_norm3(e + pool.dropout(lin))


class XPoolTeacher(Teacher):
    """X-Pool as a teacher: ``{"text": t̂, "query": q}`` per text, ``{"keys", "values",
    "lin_values", "mask"}`` per video; ``score`` = λ·t̂·p̂, relevance logits ``k_f·q/τ``.
    """

    kind = "xpool"

    def __init__(
        self,
        towers: ClipTowers,
        max_words: int,
        max_frames: int,
        *,
        dropout: float = 0.3,
        temperature: float | None = None,
        official_masking: bool = False,
        reduced: bool = True,
    ) -> None:
        super().__init__(towers, max_words, max_frames)
        width = towers.embed_dim
        self.dropout_p = dropout
        self.temperature = float(temperature) if temperature is not None else math.sqrt(width)
        self.official_masking = official_masking
        self.reduced = reduced
        self.pool_frames = PoolFrames(width, dropout)

    def config_dict(self) -> dict[str, Any]:
        return {
            "max_words": self.max_words,
            "max_frames": self.max_frames,
            "dropout": self.dropout_p,
            "temperature": self.temperature,
            "official_masking": self.official_masking,
            "reduced": self.reduced,
        }

    # ------------------------------------------------------------------ features
    def encode_text(self, ids: Tensor, mask: Tensor) -> Features:
        """``t̂`` (raw EOT feature, normalised: the final cosine) and ``q = W_q LN₁(t) + b_q``."""
        sentence, _ = self.clip.encode_text(ids, mask)
        t = sentence.float()
        pool = self.pool_frames
        return {
            "text": F.normalize(t, dim=-1),
            "query": pool.cross_attn.q_proj(pool.layer_norm1(t)),
        }

    def encode_video(self, frames: Tensor, video_mask: Tensor) -> Features:
        """Per frame: keys ``k_f``, values ``u_f = W_o val_f`` (Σa=1 lets W_o act per frame),
        ``W_lin(γ₂⊙u_f)`` for the reduced score, and the attention mask (official: all ones).
        """
        x = self.clip.encode_frames(frames).float()
        pool = self.pool_frames
        xl = pool.layer_norm1(x)
        values = F.linear(pool.cross_attn.v_proj(xl), pool.cross_attn.out_proj.weight)
        lin_values = F.linear(values * pool.layer_norm2.weight, pool.linear_proj.weight)
        if self.official_masking:
            mask = torch.ones_like(video_mask, dtype=x.dtype)
        else:
            mask = video_mask.to(x.dtype)
        return {
            "keys": pool.cross_attn.k_proj(xl),
            "values": values,
            "lin_values": lin_values,
            "mask": mask,
        }

    # ------------------------------------------------------------------ scores
    def pooled(
        self, text_feats: Features, video_feats: Features, reduced: bool | None = None
    ) -> Tensor:
        """Pooled video ``p`` [Nt,Nv,D] for every pair (memory Nt·Nv·D: use on blocks)."""
        attn = masked_attention(
            attention_logits(text_feats["query"], video_feats["keys"], self.temperature),
            video_feats["mask"],
        )
        if self.reduced if reduced is None else reduced:
            return pool_reduced(
                self.pool_frames, attn, video_feats["values"], video_feats["lin_values"]
            )
        return pool_direct(self.pool_frames, attn, video_feats["values"])

    def score(
        self, text_feats: Features, video_feats: Features, chunk_pairs: int = DEFAULT_CHUNK_PAIRS
    ) -> Tensor:
        """λ·t̂·p̂ for every text × video, in blocks of ≤ ``chunk_pairs`` pairs."""
        text = text_feats["text"]
        query = text_feats["query"]
        scale = self.clip.logit_scale.exp()

        def block(ts: slice, vs: slice) -> Tensor:
            video = {k: v[vs] for k, v in video_feats.items()}
            p = F.normalize(self.pooled({"query": query[ts]}, video), dim=-1)
            return torch.einsum("td,tvd->tv", text[ts], p)

        nv = video_feats["keys"].shape[0]
        raw = score_by_blocks(text.shape[0], nv, chunk_pairs, block, text.device, text.dtype)
        return scale * raw

    def relevance_logits(
        self, text_feats: Features, video_feats: Features
    ) -> tuple[Tensor, Tensor]:
        """``k_{i,f}·q_i/τ`` for positive pairs; softmax over the mask gives the attention ``a``."""
        query = text_feats["query"]
        keys = video_feats["keys"]
        if query.shape[0] != keys.shape[0]:
            raise ValueError(
                f"relevance needs paired rows, got {query.shape[0]} texts and "
                f"{keys.shape[0]} videos"
            )
        return torch.einsum("nd,nfd->nf", query, keys) / self.temperature, video_feats["mask"]


# ---------------------------------------------------------------------------- official import


def split_xpool_state(
    state: Mapping[str, Tensor],
) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
    """(HF CLIP state without ``clip.``, ``pool_frames`` state without its prefix); unknown keys
    raise ValueError."""
    clip_sd: dict[str, Tensor] = {}
    pool_sd: dict[str, Tensor] = {}
    unknown: list[str] = []
    for key, value in state.items():
        if key.startswith("clip."):
            clip_sd[key[len("clip."):]] = value.float() if value.is_floating_point() else value
        elif key.startswith("pool_frames."):
            pool_sd[key[len("pool_frames."):]] = value.float()
        else:
            unknown.append(key)
    if unknown:
        raise ValueError(f"unexpected keys in X-Pool checkpoint: {sorted(unknown)[:20]}")
    if not pool_sd:
        raise ValueError("X-Pool checkpoint has no pool_frames.* weights")
    return clip_sd, pool_sd


def load_official_xpool_state(teacher: XPoolTeacher, state: Mapping[str, Tensor]) -> None:
    """Load an official X-Pool ``state_dict`` (``clip.*`` in HF naming + ``pool_frames.*``).

    Strict, unlike the official ``strict=False``: a silently skipped key would leave random or
    identity weights inside an "imported" teacher (HF ``position_ids`` buffers of older
    transformers versions are the only keys tolerated).
    """
    clip_sd, pool_sd = split_xpool_state(state)
    if clip_sd:
        load_hf_state_dict(teacher.clip.model, clip_sd, source="X-Pool checkpoint")
    teacher.pool_frames.load_state_dict(pool_sd, strict=True)


def import_official_xpool(
    state: Mapping[str, Tensor],
    *,
    clip_source: str | None = None,
    max_words: int | None = None,
    max_frames: int | None = None,
    official_masking: bool = True,
    text_heads: int | None = None,
    vision_heads: int | None = None,
    **options: Any,
) -> XPoolTeacher:
    """Importer for ``checkpoint.import_official("xpool", …)`` (teachers §3.2).

    The checkpoint stores CLIP in HF naming without its config; the config is inferred from the
    tensor shapes (HF → OpenAI names → ``openai_config``), so no hub download is needed.
    ``clip_source`` is used only when there are no ``clip.*`` weights. ``max_frames`` defaults to
    the official 12 (only the official code is tied to it; this one accepts any F).
    """
    clip_sd, _ = split_xpool_state(state)
    if clip_sd:
        openai_sd = hf_state_dict_to_openai(clip_sd)
        config, _ = openai_state_dict_to_hf(
            openai_sd, text_heads=text_heads, vision_heads=vision_heads
        )
        towers = ClipTowers(config)
    elif clip_source is not None:
        towers = load_clip(clip_source)
    else:
        raise ValueError("X-Pool checkpoint has no clip.* weights and no clip_source was given")
    teacher = XPoolTeacher(
        towers,
        32 if max_words is None else max_words,
        12 if max_frames is None else max_frames,
        official_masking=official_masking,
        **options,
    )
    load_official_xpool_state(teacher, state)
    return teacher.eval()
