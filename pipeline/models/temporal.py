"""seqTransf: the temporal transformer over frame features (method §2.3, teachers §0).

The same module serves the student, X-CLIP and TS2-Net. Submodule names mirror the HF
``CLIPEncoderLayer`` (``self_attn.{q,k,v,out}_proj``, ``layer_norm1/2``, ``mlp.fc1/fc2``) so that
initialising from the CLIP text layers is a plain state-dict copy; the official
``transformerClip.resblocks.N.*`` names are mapped in ``checkpoint.py``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import nn

if TYPE_CHECKING:
    from pipeline.models.clip import ClipTowers

#: BERT-style LayerNorm epsilon used by the official seqTransf (not CLIP's 1e-5).
SEQ_TRANSF_LN_EPS = 1e-12
#: Additive key-padding penalty of the official code: ``-1e6 · (1 - m_j)``.
KEY_MASK_PENALTY = 1e6


class QuickGELU(nn.Module):
    """``z·σ(1.702 z)``: OpenAI CLIP's activation, kept so text-layer initialisation is exact."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.sigmoid(1.702 * x)


class TemporalAttention(nn.Module):
    """Multi-head self-attention with HF CLIP parameter names, computed by SDPA."""

    def __init__(self, width: int, heads: int) -> None:
        super().__init__()
        if width % heads:
            raise ValueError(f"width {width} is not divisible by heads {heads}")
        self.heads = heads
        self.q_proj = nn.Linear(width, width)
        self.k_proj = nn.Linear(width, width)
        self.v_proj = nn.Linear(width, width)
        self.out_proj = nn.Linear(width, width)

    def forward(self, x: torch.Tensor, additive_mask: torch.Tensor) -> torch.Tensor:
        """``x`` [B,n,W]; ``additive_mask`` [B,1,1,n] float, added to every query row and head."""
        b, n, w = x.shape
        shape = (b, n, self.heads, w // self.heads)
        q = self.q_proj(x).view(shape).transpose(1, 2)
        k = self.k_proj(x).view(shape).transpose(1, 2)
        v = self.v_proj(x).view(shape).transpose(1, 2)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=additive_mask.to(q.dtype))
        return self.out_proj(out.transpose(1, 2).reshape(b, n, w))


class TemporalMLP(nn.Module):
    """``fc2(QuickGELU(fc1(x)))`` with hidden width 4W (HF names ``fc1``/``fc2``)."""

    def __init__(self, width: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(width, 4 * width)
        self.act = QuickGELU()
        self.fc2 = nn.Linear(4 * width, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class TemporalBlock(nn.Module):
    """Pre-LN residual block: ``x + attn(LN1 x)``, then ``+ mlp(LN2 ·)``; no causal mask."""

    def __init__(self, width: int, heads: int, layer_norm_eps: float = SEQ_TRANSF_LN_EPS) -> None:
        super().__init__()
        self.self_attn = TemporalAttention(width, heads)
        self.layer_norm1 = nn.LayerNorm(width, eps=layer_norm_eps)
        self.mlp = TemporalMLP(width)
        self.layer_norm2 = nn.LayerNorm(width, eps=layer_norm_eps)

    def forward(self, x: torch.Tensor, additive_mask: torch.Tensor) -> torch.Tensor:
        x = x + self.self_attn(self.layer_norm1(x), additive_mask)
        return x + self.mlp(self.layer_norm2(x))


def default_heads(width: int) -> int:
    """OpenAI convention: one head per 64 channels (at least one, for tiny widths)."""
    return max(1, width // 64)


class TemporalTransformer(nn.Module):
    """``y = Blocks(x + P[0:n]) + x`` with key padding mask ``-1e6·(1-m)`` (method §2.3).

    Why the residual around the whole stack: that is what the official code does and what makes an
    untrained/zero-output stack an identity, i.e. meanP-like at initialisation.
    """

    def __init__(
        self,
        width: int,
        layers: int,
        heads: int | None = None,
        max_positions: int = 77,
        layer_norm_eps: float = SEQ_TRANSF_LN_EPS,
        init_std: float = 0.02,
    ) -> None:
        super().__init__()
        self.width = width
        self.heads = heads if heads is not None else default_heads(width)
        self.max_positions = max_positions
        self.position_embedding = nn.Embedding(max_positions, width)
        self.layers = nn.ModuleList(
            TemporalBlock(width, self.heads, layer_norm_eps) for _ in range(layers)
        )
        # Official init for new Linear/Embedding weights: N(0, 0.02), zero biases.
        for module in self.modules():
            if isinstance(module, (nn.Linear, nn.Embedding)):
                nn.init.normal_(module.weight, std=init_std)
                if isinstance(module, nn.Linear) and module.bias is not None:
                    nn.init.zeros_(module.bias)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """``x`` [B,F,W] frame features, ``mask`` [B,F] (1 = real frame) → ``y`` [B,F,W]."""
        b, n, _ = x.shape
        if n > self.max_positions:
            raise ValueError(f"{n} frames exceed the {self.max_positions} temporal positions")
        if mask is None:
            mask = torch.ones(b, n, device=x.device)
        penalty = min(KEY_MASK_PENALTY, torch.finfo(x.dtype).max)
        additive = (-penalty * (1.0 - mask.to(x.dtype))).view(b, 1, 1, n)
        positions = self.position_embedding.weight[:n].to(x.dtype)
        h = x + positions.unsqueeze(0)
        for block in self.layers:
            h = block(h, additive)
        return h + x

    @torch.no_grad()
    def init_from_clip_text(self, towers: ClipTowers) -> None:
        """P ← CLIP text positional embedding; block k ← CLIP text layer k (method §2.3).

        Requires text width == ``width`` (true for OpenAI CLIPs where text width = embed dim).
        """
        pos = towers.text_position_embedding()
        if pos.shape[1] != self.width:
            raise ValueError(
                f"cannot initialise seqTransf of width {self.width} from a CLIP text tower of "
                f"width {pos.shape[1]}"
            )
        rows = min(self.max_positions, pos.shape[0])
        self.position_embedding.weight[:rows].copy_(pos[:rows])
        # Like the official key-rename initialisation: blocks beyond the text depth keep their
        # N(0, 0.02) init instead of failing (only matters for tiny test CLIPs).
        for block, source in zip(self.layers, towers.text_layers(), strict=False):
            block.load_state_dict(source.state_dict(), strict=True)


def build_seq_transf(
    towers: ClipTowers,
    layers: int,
    heads: int | None = None,
    *,
    init_from_clip: bool = True,
) -> TemporalTransformer:
    """seqTransf sized for ``towers`` (width D, P rows = CLIP context length), CLIP-initialised.

    Default heads: the text tower's head count when its width equals D (so the copied text layers
    behave as they did inside CLIP; = D/64 for OpenAI CLIPs), else ``default_heads(D)``.
    """
    width = towers.embed_dim
    if heads is None:
        text_cfg = towers.config.text_config
        heads = (
            int(text_cfg.num_attention_heads)
            if int(text_cfg.hidden_size) == width
            else default_heads(width)
        )
    module = TemporalTransformer(width, layers, heads, max_positions=towers.context_length)
    if init_from_clip and towers.text_width == width:
        module.init_from_clip_text(towers)
    return module
