"""TS2-Net token shift for Hugging Face CLIP vision layers (upstream TS2-Net, absent in TeachCLIP).

Upstream TS2-Net wraps the attention of the last two visual blocks so that, on the LN1 output
feeding attention (q = k = v), a few patch positions take the whole token from the neighbouring
frame: positions ``1, 1+s, 1+2s, …`` from frame t−1 and ``4, 4+s, …`` from frame t+1 (s = 7 for
ViT-B/32: 1,8,…,43 and 4,11,…,46). CLS and the boundary frames keep their own tokens and the
residual stream is not shifted: ``x ← x + MHA(shift(LN1 x))``.

Implementation: a forward hook on each chosen layer's ``layer_norm1``. In every transformers
version (4.x and 5.x) ``CLIPEncoderLayer`` saves the residual *before* ``layer_norm1`` and feeds
its output only to ``self_attn``, so replacing that output shifts exactly the attention input and
leaves the parameter names (hence checkpoints) untouched. The hook needs to know how many frames
form one video; that is set per call with :meth:`TokenShift.frames`, and outside that context the
hook is a no-op (so single-image encoding still works).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import torch
from torch import Tensor, nn
from torch.utils.hooks import RemovableHandle


def shift_positions(num_tokens: int, step: int = 7) -> tuple[Tensor, Tensor]:
    """Token positions shifted from frame t−1 and from frame t+1 (CLS = position 0 never moves).

    Upstream uses ``fold = num_tokens // 7`` (= 7 for ViT-B/32's 50 tokens); ``step`` is that fold.
    Where the two sets overlap (step 1 or 3) the t+1 shift wins, as upstream applies it second.
    """
    if step < 1:
        raise ValueError(f"token shift step must be >= 1, got {step}")
    back = torch.arange(1, num_tokens, step)
    forward = torch.arange(4, num_tokens, step)
    return back, forward


def shift_tokens(x: Tensor, frames: int, step: int = 7, valid: Tensor | None = None) -> Tensor:
    """Shift whole tokens between neighbouring frames of each video.

    ``x`` is ``[B·F, T, C]`` with the F frames of a video consecutive (frame-major per video, the
    layout ClipTowers uses when it flattens ``[B,F,…]``). ``valid`` [B,F] (optional): a frame only
    takes tokens from a *valid* neighbour, i.e. a padded neighbour acts like a video boundary, so
    padding never leaks into real frames. Upstream passes no mask (padding shifts like real
    frames). Returns a new tensor of the same shape.
    """
    bf, t, c = x.shape
    if frames < 1 or bf % frames:
        raise ValueError(f"token shift: {bf} frames is not a multiple of {frames} per video")
    back, fwd = shift_positions(t, step)
    back = back.to(x.device)
    fwd = fwd.to(x.device)
    b = bf // frames
    v = x.reshape(b, frames, t, c)
    out = v.clone()
    if frames > 1:
        from_prev = v[:, :-1][:, :, back]
        from_next = v[:, 1:][:, :, fwd]
        if valid is not None:
            ok = valid.to(device=x.device, dtype=torch.bool).reshape(b, frames, 1, 1)
            from_prev = torch.where(ok[:, :-1], from_prev, v[:, 1:][:, :, back])
            from_next = torch.where(ok[:, 1:], from_next, v[:, :-1][:, :, fwd])
        out[:, 1:, back] = from_prev
        out[:, :-1, fwd] = from_next
    return out.reshape(bf, t, c)


class TokenShift(nn.Module):
    """Installs the shift on given ``CLIPEncoderLayer``s; holds no parameters (no state-dict keys).

    Being an ``nn.Module`` attribute of the teacher means the hooks (bound methods of this object)
    follow ``deepcopy``/pickling of the teacher.
    """

    def __init__(self, step: int = 7) -> None:
        super().__init__()
        self.step = step
        self.enabled = True
        self._frames: int | None = None
        self._valid: Tensor | None = None
        self._handles: list[RemovableHandle] = []

    def attach(self, layers: Sequence[nn.Module]) -> None:
        """Hook ``layer_norm1`` of each layer (an HF ``CLIPEncoderLayer`` or anything alike)."""
        for layer in layers:
            norm = getattr(layer, "layer_norm1", None)
            if not isinstance(norm, nn.Module):
                raise TypeError(f"{type(layer).__name__} has no layer_norm1 to hook the shift on")
            self._handles.append(norm.register_forward_hook(self._hook))

    def detach(self) -> None:
        """Remove every hook installed by :meth:`attach`."""
        for handle in self._handles:
            handle.remove()
        self._handles.clear()

    @contextmanager
    def frames(self, num_frames: int, valid: Tensor | None = None) -> Iterator[None]:
        """Within this context, vision batches are read as videos of ``num_frames`` frames;
        ``valid`` [B,F] makes padded frames act as boundaries (see :func:`shift_tokens`).
        """
        previous = (self._frames, self._valid)
        self._frames, self._valid = num_frames, valid
        try:
            yield
        finally:
            self._frames, self._valid = previous

    def _hook(self, module: nn.Module, inputs: tuple[Tensor, ...], output: Tensor) -> Tensor:
        if not self.enabled or self._frames is None:
            return output
        return shift_tokens(output, self._frames, self.step, self._valid)

    def extra_repr(self) -> str:
        return f"step={self.step}, enabled={self.enabled}, hooks={len(self._handles)}"
