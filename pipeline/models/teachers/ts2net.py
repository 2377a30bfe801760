"""TS2-Net teacher (method §3.2, teachers §2): token shift + token selection + seqTransf.

Per video: CLIP tokens of every frame (optionally token-shifted in the last visual blocks), a
learned scorer + perturbed top-k picks 3 soft patch tokens per frame, ``[CLS; 3 selected]`` of
all frames (4F tokens) go through seqTransf and the output at each frame's CLS slot is that
frame's feature ``ĉ_f``. Per text: ``ŝ``. Per pair: ``q_f = ĉ_f·ŝ``, ``a = softmax_f(4·q̃)`` with
``q̃`` the masked L2-normalised ``q``, ``T = λ Σ_f a_f q_f``: O(F·D), one GEMM per block.

Switches, because the released TeachCLIP checkpoint and the upstream method differ:
- ``token_shift``: upstream TS2-Net shifts tokens; the TeachCLIP port does not (teachers §2.2).
- ``official_masking``: reproduce the tiled frame mask of the official code (token i of the 4F
  sequence uses ``m[i mod F]``, so frame f is masked by ``m[(4f) mod F]``) and its unmasked
  relevance; the default masks correctly (token of frame f uses ``m[f]``, padded frames act as
  boundaries of the token shift), so padded frames get no weight anywhere.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from pipeline.models.clip import ClipTowers
from pipeline.models.teachers.base import DEFAULT_CHUNK_PAIRS, Features, Teacher
from pipeline.models.teachers.topk import PerturbedTopK
from pipeline.models.temporal import KEY_MASK_PENALTY, TemporalTransformer
from pipeline.models.token_shift import TokenShift

# ---------------------------------------------------------------------------- shared helpers


def pair_blocks(nt: int, nv: int, chunk_pairs: int) -> Iterator[tuple[slice, slice]]:
    """Cover an ``nt × nv`` grid with rectangles of at most ``chunk_pairs`` cells.

    Why rectangles that are wide in videos: per-video features are the larger ones, so a block
    takes as many texts as fit and walks the videos; for tiny budgets it degrades to 1×n.
    """
    if chunk_pairs < 1:
        raise ValueError(f"chunk_pairs must be >= 1, got {chunk_pairs}")
    t_step = max(1, min(nt, chunk_pairs))
    v_step = max(1, chunk_pairs // t_step)
    for t0 in range(0, nt, t_step):
        for v0 in range(0, nv, v_step):
            yield slice(t0, min(nt, t0 + t_step)), slice(v0, min(nv, v0 + v_step))


def score_by_blocks(
    nt: int,
    nv: int,
    chunk_pairs: int,
    block: Any,
    device: torch.device,
    dtype: torch.dtype,
) -> Tensor:
    """Assemble ``[nt,nv]`` from ``block(t_slice, v_slice) -> [nt_b, nv_b]``.

    Without grad the blocks are written into one preallocated tensor (no copies of every block);
    with grad they are concatenated so the result stays differentiable (training ``forward``).
    """
    if not torch.is_grad_enabled():
        out = torch.empty(nt, nv, device=device, dtype=dtype)
        for ts, vs in pair_blocks(nt, nv, chunk_pairs):
            out[ts, vs] = block(ts, vs)
        return out
    rows: dict[int, list[Tensor]] = {}
    for ts, vs in pair_blocks(nt, nv, chunk_pairs):
        rows.setdefault(ts.start, []).append(block(ts, vs))
    return torch.cat([torch.cat(parts, dim=1) for _, parts in sorted(rows.items())], dim=0)


def run_temporal(temporal: TemporalTransformer, x: Tensor, mask: Tensor) -> Tensor:
    """seqTransf over ``n`` tokens with positions ``p mod max_positions`` (TeachCLIP's ``mod 77``).

    ``TemporalTransformer.forward`` refuses n > 77, but TS2-Net feeds 4F tokens (256 for F=64),
    and TeachCLIP wraps the position ids. Same maths as ``TemporalTransformer.forward`` otherwise
    (a test checks the two agree for n ≤ 77).
    """
    b, n, _ = x.shape
    ids = torch.arange(n, device=x.device) % temporal.max_positions
    penalty = min(KEY_MASK_PENALTY, torch.finfo(x.dtype).max)
    additive = (-penalty * (1.0 - mask.to(x.dtype))).view(b, 1, 1, n)
    h = x + temporal.position_embedding.weight[ids].to(x.dtype).unsqueeze(0)
    for layer in temporal.layers:
        h = layer(h, additive)
    return h + x


def ts2net_block_scores(
    text: Tensor, frames: Tensor, frame_mask: Tensor, softmax_scale: float = 4.0
) -> Tensor:
    """Un-scaled TS2-Net scores ``Σ_f a_f q_f`` for every text × video of a block → ``[Nt,Nv]``.

    ``text`` ŝ [Nt,D], ``frames`` ĉ [Nv,F,D] (both L2-normalised), ``frame_mask`` m′ [Nv,F].
    ``q̃ = (q⊙m′)/‖q⊙m′‖`` (F.normalize's eps, as the official code), masked frames are excluded
    from the softmax. One GEMM ``[Nt,D]×[D,Nv·F]`` plus an O(F) softmax per pair.
    """
    nv, nf, d = frames.shape
    q = (text @ frames.reshape(nv * nf, d).T).view(text.shape[0], nv, nf)
    valid = frame_mask.to(torch.bool).unsqueeze(0)
    q_masked = q * valid.to(q.dtype)
    q_unit = F.normalize(q_masked, dim=-1)
    logits = (softmax_scale * q_unit).masked_fill(~valid, torch.finfo(q.dtype).min)
    weights = torch.softmax(logits, dim=-1)
    return (weights * q).sum(dim=-1)


def _checkpointing_on(model: nn.Module) -> bool:
    """Whether HF gradient checkpointing is on (5.x renamed the property; 4.x has the old one)."""
    for name in ("is_activation_checkpointing", "is_gradient_checkpointing"):
        if hasattr(type(model), name) or hasattr(model, name):
            return bool(getattr(model, name))
    return False


# ---------------------------------------------------------------------------- token selection


class ScorePredictor(nn.Module):
    """Official ``PredictorLG``: ``σ_p = tanh(w3ᵀ GELU(W2·[h_p; h_CLS]))``, ``h = GELU(W1·LN z)``.

    Submodule names (``in_conv.0/1``, ``out_conv.0/2``) match the released checkpoints so import
    is a plain copy.
    """

    def __init__(self, width: int) -> None:
        super().__init__()
        half = width // 2
        self.in_conv = nn.Sequential(
            nn.LayerNorm(width), nn.Linear(width, half, bias=False), nn.GELU()
        )
        self.out_conv = nn.Sequential(
            nn.Linear(width, half, bias=False), nn.GELU(), nn.Linear(half, 1, bias=False), nn.Tanh()
        )

    def forward(self, tokens: Tensor) -> Tensor:
        """``tokens`` [N,1+P,D] (CLS first) → scores [N,1+P] in (−1, 1)."""
        h = self.in_conv(tokens)
        global_h = h[:, :1].expand_as(h)
        return self.out_conv(torch.cat([h, global_h], dim=-1)).squeeze(-1)


class VisualTokenSelector(nn.Module):
    """``[CLS; k soft-selected patches]`` per frame (official ``VisualTokenSelection``)."""

    def __init__(
        self, width: int, topk: int = 3, num_samples: int = 500, sigma: float = 0.05, seed: int = 0
    ) -> None:
        super().__init__()
        self.score_predictor = ScorePredictor(width)
        self.topk_selector = PerturbedTopK(topk, num_samples, sigma, seed)

    def forward(self, tokens: Tensor) -> Tensor:
        """``tokens`` [N,1+P,D] → [N,1+k,D]; the selected tokens are convex mixes of patches."""
        scores = self.score_predictor(tokens)
        selection = self.topk_selector(scores[:, 1:])  # [N,k,P]
        selected = torch.einsum("nkp,npd->nkd", selection.to(tokens.dtype), tokens[:, 1:])
        return torch.cat([tokens[:, :1], selected], dim=1)


# ---------------------------------------------------------------------------- the teacher


class TS2NetTeacher(Teacher):
    """TS2-Net as a teacher: features ``{"text": ŝ}`` and ``{"frames": ĉ, "frame_mask": m′,
    "relevance_mask": …}``; ``score`` is λ·Σ softmax(4q̃)·q, relevance logits are ``ŝ·ĉ_f``.
    """

    kind = "ts2net"

    def __init__(
        self,
        towers: ClipTowers,
        max_words: int,
        max_frames: int,
        *,
        temporal_layers: int = 4,
        temporal_heads: int | None = None,
        topk: int = 3,
        num_samples: int = 500,
        sigma: float = 0.05,
        seed: int = 0,
        softmax_scale: float = 4.0,
        token_shift: bool = False,
        shift_layers: Sequence[int] | None = None,
        shift_step: int = 7,
        official_masking: bool = False,
        init_temporal_from_clip: bool = True,
    ) -> None:
        super().__init__(towers, max_words, max_frames)
        width = towers.embed_dim
        self.temporal_layers = temporal_layers
        self.temporal_heads = temporal_heads
        self.topk = topk
        self.softmax_scale = softmax_scale
        self.official_masking = official_masking
        self.temporal = TemporalTransformer(width, temporal_layers, temporal_heads)
        if init_temporal_from_clip and towers.text_width == width:
            self.temporal.init_from_clip_text(towers)
        self.visual_token_selector = VisualTokenSelector(width, topk, num_samples, sigma, seed)
        for module in self.visual_token_selector.modules():
            if isinstance(module, nn.Linear):  # official init of new layers: N(0, 0.02)
                nn.init.normal_(module.weight, std=0.02)
        vision_layers = towers.model.vision_model.encoder.layers
        n_vision = len(vision_layers)
        if shift_layers is None:
            shift_layers = list(range(max(0, n_vision - 2), n_vision))
        self.shift_layers = [int(i) % n_vision for i in shift_layers]
        self.shift_step = shift_step
        self.token_shift_enabled = token_shift
        self.token_shift = TokenShift(shift_step)
        if token_shift:
            self.token_shift.attach([vision_layers[i] for i in self.shift_layers])

    # ------------------------------------------------------------------ options
    @property
    def seed(self) -> int:
        """Seed of the perturbed top-k noise (scores are reproducible given this seed)."""
        return self.visual_token_selector.topk_selector.seed

    @seed.setter
    def seed(self, value: int) -> None:
        self.visual_token_selector.topk_selector.reseed(value)

    def config_dict(self) -> dict[str, Any]:
        sel = self.visual_token_selector.topk_selector
        return {
            "max_words": self.max_words,
            "max_frames": self.max_frames,
            "temporal_layers": self.temporal_layers,
            "temporal_heads": self.temporal_heads,
            "topk": self.topk,
            "num_samples": sel.num_samples,
            "sigma": sel.sigma,
            "seed": sel.seed,
            "softmax_scale": self.softmax_scale,
            "token_shift": self.token_shift_enabled,
            "shift_layers": list(self.shift_layers),
            "shift_step": self.shift_step,
            "official_masking": self.official_masking,
        }

    # ------------------------------------------------------------------ features
    def encode_text(self, ids: Tensor, mask: Tensor) -> Features:
        """``{"text": ŝ [N,D]}`` (EOT feature, L2-normalised)."""
        sentence, _ = self.clip.encode_text(ids, mask)
        return {"text": F.normalize(sentence.float(), dim=-1)}

    def token_mask(self, video_mask: Tensor) -> Tensor:
        """Mask of the (1+k)·F token sequence: interleaved (correct) or tiled (official)."""
        slots = self.topk + 1
        m = video_mask.float()
        return m.repeat(1, slots) if self.official_masking else m.repeat_interleave(slots, dim=1)

    def frame_tokens(self, frames: Tensor, video_mask: Tensor | None = None) -> Tensor:
        """CLIP tokens [N,F,1+P,D] with the token shift applied across each video's frames.

        Default mode passes ``video_mask`` so padded frames act as boundaries of the shift (no
        padding leaks into real frames); official mode shifts padding like real frames.
        """
        valid = None if self.official_masking or video_mask is None else video_mask.bool()
        with self._without_checkpointing(), self.token_shift.frames(frames.shape[1], valid):
            return self.clip.encode_frame_tokens(frames)

    @contextmanager
    def _without_checkpointing(self) -> Iterator[None]:
        """Switch CLIP gradient checkpointing off while shifted frames are encoded with grad.

        Why: checkpointing recomputes the layers during backward, after the shift's frame context
        has closed, so the recomputation would run unshifted (torch rejects the mismatch). The
        vision pass of a shifted teacher therefore keeps its activations instead.
        """
        model = self.clip.model
        active = (
            self.token_shift_enabled
            and torch.is_grad_enabled()
            and _checkpointing_on(model)
        )
        if active:
            self.clip.set_gradient_checkpointing(False)
        try:
            yield
        finally:
            if active:
                self.clip.set_gradient_checkpointing(True)

    def encode_video(self, frames: Tensor, video_mask: Tensor) -> Features:
        """``{"frames": ĉ [N,F,D], "frame_mask": m′ [N,F], "relevance_mask": [N,F]}``.

        ``m′`` is the mask the score uses (``m`` or, in official mode, ``m[(1+k)f mod F]``);
        ``relevance_mask`` is ``m`` (official mode: all ones, the official R has no mask).
        """
        n, nf = frames.shape[:2]
        tokens = self.frame_tokens(frames, video_mask).float()
        per_frame = self.visual_token_selector(tokens.reshape(n * nf, *tokens.shape[2:]))
        slots = per_frame.shape[1]
        sequence = per_frame.reshape(n, nf * slots, -1)
        token_mask = self.token_mask(video_mask)
        out = run_temporal(self.temporal, sequence, token_mask)
        cls = out.view(n, nf, slots, -1)[:, :, 0]
        # The CLS slot of frame f is token (1+k)·f: m[f] when interleaved, m[(1+k)f mod F] tiled.
        frame_mask = token_mask.view(n, nf, slots)[:, :, 0]
        if self.official_masking:
            relevance_mask = torch.ones_like(frame_mask)
        else:
            relevance_mask = video_mask.float()
        return {
            "frames": F.normalize(cls, dim=-1),
            "frame_mask": frame_mask,
            "relevance_mask": relevance_mask,
        }

    # ------------------------------------------------------------------ scores
    def score(
        self, text_feats: Features, video_feats: Features, chunk_pairs: int = DEFAULT_CHUNK_PAIRS
    ) -> Tensor:
        """λ·Σ_f softmax_f(scale·q̃)_f q_f for every text × video, in blocks of ≤ chunk_pairs."""
        text = text_feats["text"]
        frames = video_feats["frames"]
        mask = video_feats["frame_mask"]
        scale = self.clip.logit_scale.exp()

        def block(ts: slice, vs: slice) -> Tensor:
            return ts2net_block_scores(text[ts], frames[vs], mask[vs], self.softmax_scale)

        raw = score_by_blocks(
            text.shape[0], frames.shape[0], chunk_pairs, block, frames.device, frames.dtype
        )
        return scale * raw

    def relevance_logits(
        self, text_feats: Features, video_feats: Features
    ) -> tuple[Tensor, Tensor]:
        """``ŝ_i·ĉ_{i,f}`` (post-temporal CLS slots, no temperature) and the relevance mask."""
        text = text_feats["text"]
        frames = video_feats["frames"]
        if text.shape[0] != frames.shape[0]:
            raise ValueError(
                f"relevance needs paired rows, got {text.shape[0]} texts and "
                f"{frames.shape[0]} videos"
            )
        logits = torch.einsum("nd,nfd->nf", text, frames)
        return logits, video_feats["relevance_mask"]
