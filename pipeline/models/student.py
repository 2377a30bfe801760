"""The TeachCLIP student: CLIP4Clip (meanP or seqTransf) + AFA (method §2, teachers §6).

Retrieval needs one D-vector per video and per text; AFA only decides how frames are pooled, and
its temperature-1 weights are what the teachers' frame relevance supervises.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import nn

from pipeline.models.clip import ClipTowers, build_param_groups
from pipeline.models.teachers.base import masked_softmax
from pipeline.models.temporal import TemporalTransformer, build_seq_transf


@dataclass(frozen=True)
class StudentConfig:
    """Student architecture. ``temporal_heads=None``: the CLIP text tower's head count (D/64)."""

    temporal: Literal["seqTransf", "meanP"] = "seqTransf"
    aggregation: Literal["afa", "mean"] = "afa"
    afa_temperature: float = 0.1
    temporal_layers: int = 4
    temporal_heads: int | None = None
    init_std: float = 0.02

    def __post_init__(self) -> None:
        if self.temporal not in ("seqTransf", "meanP"):
            raise ValueError(f"temporal must be 'seqTransf' or 'meanP', got {self.temporal!r}")
        if self.aggregation not in ("afa", "mean"):
            raise ValueError(f"aggregation must be 'afa' or 'mean', got {self.aggregation!r}")
        if self.afa_temperature <= 0:
            raise ValueError(f"afa_temperature must be > 0, got {self.afa_temperature}")


@dataclass
class VideoOutput:
    """Video side of the student.

    ``embedding`` [B,D] L2-normalised; ``frame_weights`` [B,F] = softmax_f(w) at T=1 over real
    frames (what the fine distillation loss compares with the teacher relevance); ``frame_logits``
    w [B,F]. Both are None for ``aggregation="mean"``.
    """

    embedding: torch.Tensor
    frame_weights: torch.Tensor | None
    frame_logits: torch.Tensor | None


class AFA(nn.Module):
    """Attentional frame-Feature Aggregation: ``w = frame_linear2(ReLU(frame_linear(y)))``."""

    def __init__(self, dim: int, temperature: float = 0.1, init_std: float = 0.02) -> None:
        super().__init__()
        self.temperature = temperature
        self.frame_linear = nn.Linear(dim, dim)
        self.frame_linear2 = nn.Linear(dim, 1)
        for layer in (self.frame_linear, self.frame_linear2):
            nn.init.normal_(layer.weight, std=init_std)
            nn.init.zeros_(layer.bias)

    def frame_logits(self, y: torch.Tensor) -> torch.Tensor:
        """w [B,F] from the un-normalised temporal output y [B,F,D]."""
        return self.frame_linear2(F.relu(self.frame_linear(y))).squeeze(-1)

    def aggregate(self, y: torch.Tensor, mask: torch.Tensor | None) -> VideoOutput:
        """v = Σ_f softmax_f(w/T) ŷ_f over real frames; padded frames get weight exactly 0.

        With an all-ones mask this is exactly the official formula (which ignores the mask).
        """
        w = self.frame_logits(y)
        alpha = masked_softmax(w / self.temperature, mask, dim=-1)
        v = torch.einsum("bf,bfd->bd", alpha, F.normalize(y, dim=-1))
        return VideoOutput(
            embedding=F.normalize(v, dim=-1),
            frame_weights=masked_softmax(w, mask, dim=-1),
            frame_logits=w,
        )


def masked_mean_pool(y: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """normalise(mean of ŷ over real frames): CLIP4Clip meanP pooling."""
    y_hat = F.normalize(y, dim=-1)
    if mask is None:
        return F.normalize(y_hat.mean(dim=1), dim=-1)
    m = mask.to(y.dtype).unsqueeze(-1)
    return F.normalize((y_hat * m).sum(1) / m.sum(1).clamp(min=1.0), dim=-1)


class Student(nn.Module):
    """CLIP towers (``clip``) + optional seqTransf (``temporal``) + optional AFA (``afa``)."""

    kind = "student"

    def __init__(self, towers: ClipTowers, config: StudentConfig | None = None) -> None:
        super().__init__()
        self.config = config or StudentConfig()
        self.clip = towers
        dim = towers.embed_dim
        self.temporal: TemporalTransformer | None = None
        if self.config.temporal == "seqTransf":
            self.temporal = build_seq_transf(
                towers, self.config.temporal_layers, self.config.temporal_heads
            )
        self.afa: AFA | None = None
        if self.config.aggregation == "afa":
            self.afa = AFA(dim, self.config.afa_temperature, self.config.init_std)

    def config_dict(self) -> dict[str, Any]:
        """JSON-able architecture description (checkpoints)."""
        out = asdict(self.config)
        if self.temporal is not None:
            out["temporal_heads"] = self.temporal.heads
        return out

    def encode_text(self, ids: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """Sentence features s [B,D], un-normalised (EOT position; mask unused: causal encoder)."""
        sentence, _ = self.clip.encode_text(ids, mask)
        return sentence

    def video_from_features(self, x: torch.Tensor, mask: torch.Tensor | None) -> VideoOutput:
        """From CLIP frame features x [B,F,D]: temporal module, then aggregation.

        Separate from ``encode_video`` so the golden test (and cached-feature experiments) can
        feed frame features directly.
        """
        if mask is not None:
            mask = mask.to(x.dtype)
        y = self.temporal(x, mask) if self.temporal is not None else x
        if self.afa is not None:
            return self.afa.aggregate(y, mask)
        return VideoOutput(masked_mean_pool(y, mask), None, None)

    def encode_video(self, frames: torch.Tensor, video_mask: torch.Tensor) -> VideoOutput:
        """Normalised frames [B,F,3,H,W] + mask [B,F] → ``VideoOutput``."""
        return self.video_from_features(self.clip.encode_frames(frames), video_mask)

    @torch.no_grad()
    def param_groups(
        self,
        lr: float,
        coef_lr: float,
        afa_lr_multiplier: float = 10.0,
        weight_decay: float = 0.2,
    ) -> list[dict[str, Any]]:
        """CLIP at lr·coef_lr, seqTransf at lr, AFA at lr·afa_lr_multiplier (method §6).

        No weight decay for biases, norms, logit_scale and embeddings; frozen params excluded.
        """
        return build_param_groups(
            self.named_parameters(),
            lr=lr,
            coef_lr=coef_lr,
            weight_decay=weight_decay,
            multipliers={"afa.": afa_lr_multiplier},
        )


def student_logits(sentence: torch.Tensor, video: torch.Tensor, logit_scale: torch.Tensor
                   ) -> torch.Tensor:
    """λ·ŝ·v̂ᵀ [Bt,Bv] with λ = exp(logit_scale) (rows = texts): the student's retrieval score.

    Training (on the gathered global batch) and the golden test both call this function, so the
    checked path is the trained one. Computed in float32 even under autocast: bf16 would round
    λ≈100-scaled logits to ±0.25.
    """
    dtype = torch.promote_types(sentence.dtype, torch.float32)  # float64 stays (golden tests)
    with torch.autocast(device_type=sentence.device.type, enabled=False):
        s = F.normalize(sentence.to(dtype), dim=-1)
        v = F.normalize(video.to(dtype), dim=-1)
        return logit_scale.exp().to(dtype) * s @ v.T
