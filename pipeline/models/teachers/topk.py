"""Perturbed top-k (TS2-Net token selection), seeded so a teacher's scores are reproducible.

TS2-Net picks k patches per frame by averaging hard top-k one-hots over noisy copies of the patch
scores (Berthet et al., "Learning with differentiable perturbed optimizers"). The official code
draws fresh noise on every call, even at inference, so the teacher is stochastic; a cached
teacher must be reproducible, hence the explicit seed.

Noise policy (a deliberate, documented choice):
- ``eval()``: one noise table ``[num_samples, P]`` derived from ``seed`` alone, shared by every
  row. A frame's selection is then a pure function of its own scores and the seed, independent of
  batch size, batch order, sharding or device, so cached teacher features never depend on how
  scoring was batched. (The official code draws independent noise per frame; each frame's
  selection has the same distribution either way.)
- ``train()``: independent noise per row, as the official code, from a ``torch.Generator`` seeded
  with ``seed`` on first use, so a training run is reproducible from its seed.
- ``sigma = 0`` (accepted by the official code): no noise at all, the selection is the hard top-k
  (sorted by patch index) in train and eval mode alike, and the seed is irrelevant. Its gradient
  is 0, the derivative of a piecewise-constant selection (the official estimator divides by σ and
  gives inf/NaN there), so a scorer trained with σ = 0 does not learn.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn


def _counts_and_noise_sums(indices: Tensor, noise: Tensor, size: int) -> tuple[Tensor, Tensor]:
    """Sum one-hots and one-hot·noise over samples without materialising ``[N,S,k,P]`` one-hots.

    ``indices`` [N,S,k] (sorted per sample), ``noise`` [N,S,P] (may be an expanded view).
    Returns ``counts`` [N,k,P] = Σ_n onehot and ``noise_sums`` [N,k,P] = Σ_n onehot·ε.
    """
    n, s, k = indices.shape
    flat = indices.permute(0, 2, 1)  # [N,k,S]
    counts = torch.zeros(n, k, size, dtype=noise.dtype, device=noise.device)
    counts.scatter_add_(2, flat, torch.ones_like(flat, dtype=noise.dtype))
    picked = torch.gather(noise, 2, indices)  # [N,S,k]: ε at each chosen index
    noise_sums = torch.zeros_like(counts)
    noise_sums.scatter_add_(2, flat, picked.permute(0, 2, 1).contiguous())
    return counts, noise_sums


class _PerturbedTopKFunction(torch.autograd.Function):
    """Forward: mean of sorted top-k one-hots over perturbed scores. Backward: official estimator.

    The official backward uses ``∇x[d] = Σ_k g[k,d] · E[onehot[k,d]·ε[d]] / σ`` (the diagonal of
    the perturbed-optimiser Jacobian); it is reproduced so that a teacher trained here follows the
    same dynamics as the released ones.
    """

    @staticmethod
    def forward(  # type: ignore[override]
        ctx: torch.autograd.function.FunctionCtx,
        scores: Tensor,
        noise: Tensor,
        k: int,
        sigma: float,
    ) -> Tensor:
        num_samples = noise.shape[1]
        perturbed = scores.unsqueeze(1) + sigma * noise  # [N,S,P]
        indices = torch.topk(perturbed, k=k, dim=-1, sorted=False).indices
        indices = torch.sort(indices, dim=-1).values  # order by patch index, as official
        counts, noise_sums = _counts_and_noise_sums(indices, noise, scores.shape[-1])
        ctx.save_for_backward(noise_sums)
        ctx.scale = 1.0 / (num_samples * sigma)
        return counts / num_samples

    @staticmethod
    def backward(  # type: ignore[override]
        ctx: torch.autograd.function.FunctionCtx, grad_output: Tensor
    ) -> tuple[Tensor | None, None, None, None]:
        (noise_sums,) = ctx.saved_tensors
        grad = (grad_output * noise_sums).sum(dim=1) * ctx.scale
        return grad, None, None, None


def _sorted_topk_onehot(scores: Tensor, k: int) -> Tensor:
    """Hard top-k of ``scores`` [N,P] as one-hots [N,k,P], slots ordered by patch index."""
    indices = torch.sort(torch.topk(scores, k=k, dim=-1, sorted=False).indices, dim=-1).values
    out = torch.zeros(*indices.shape, scores.shape[-1], dtype=scores.dtype, device=scores.device)
    return out.scatter_(2, indices.unsqueeze(-1), 1.0)


class _HardTopKFunction(torch.autograd.Function):
    """σ = 0: the noiseless selection, with the zero gradient of a piecewise-constant function
    (explicit, so the scorer still receives a finite gradient and DDP sees it used)."""

    @staticmethod
    def forward(  # type: ignore[override]
        ctx: torch.autograd.function.FunctionCtx, scores: Tensor, k: int
    ) -> Tensor:
        return _sorted_topk_onehot(scores, k)

    @staticmethod
    def backward(  # type: ignore[override]
        ctx: torch.autograd.function.FunctionCtx, grad_output: Tensor
    ) -> tuple[Tensor, None]:
        return grad_output.new_zeros(grad_output.shape[0], grad_output.shape[2]), None


class PerturbedTopK(nn.Module):
    """Soft top-k selection ``[N,P] -> [N,k,P]``; every row of the output sums to 1.

    Row j of a frame's output is the empirical distribution of the j-th selected patch (patches
    sorted by index), so ``out @ tokens`` gives k convex combinations of patch tokens.
    """

    def __init__(
        self, k: int = 3, num_samples: int = 500, sigma: float = 0.05, seed: int = 0
    ) -> None:
        super().__init__()
        if k < 1 or num_samples < 1 or not sigma >= 0:
            raise ValueError(
                f"PerturbedTopK needs k >= 1, num_samples >= 1 and sigma >= 0 (0 = deterministic "
                f"top-k), got k={k}, num_samples={num_samples}, sigma={sigma}"
            )
        self.k = k
        self.num_samples = num_samples
        self.sigma = sigma
        self.seed = seed
        self._generator: torch.Generator | None = None
        self._eval_noise: dict[tuple[int, str, torch.dtype], Tensor] = {}

    def reseed(self, seed: int | None = None) -> None:
        """Restart the training noise stream (and optionally change the seed)."""
        if seed is not None:
            self.seed = seed
            self._eval_noise.clear()
        self._generator = None

    def _shared_noise(self, size: int, like: Tensor) -> Tensor:
        """Seed-only noise table, drawn on CPU so it is identical on every device."""
        key = (size, str(like.device), like.dtype)
        if key not in self._eval_noise:
            gen = torch.Generator(device="cpu").manual_seed(self.seed)
            table = torch.randn(self.num_samples, size, generator=gen, dtype=torch.float32)
            self._eval_noise[key] = table.to(device=like.device, dtype=like.dtype)
        return self._eval_noise[key]

    def _fresh_noise(self, rows: int, size: int, like: Tensor) -> Tensor:
        if self._generator is None or self._generator.device != like.device:
            self._generator = torch.Generator(device=like.device).manual_seed(self.seed)
        return torch.randn(
            rows,
            self.num_samples,
            size,
            generator=self._generator,
            device=like.device,
            dtype=like.dtype,
        )

    def forward(self, scores: Tensor) -> Tensor:
        """``scores`` [N,P] -> soft selection [N,k,P] (differentiable w.r.t. ``scores``)."""
        if scores.dim() != 2:
            raise ValueError(f"PerturbedTopK expects [N,P] scores, got {tuple(scores.shape)}")
        n, p = scores.shape
        if self.k > p:
            raise ValueError(f"cannot select {self.k} of {p} patches")
        if self.sigma == 0:
            return _HardTopKFunction.apply(scores, self.k)
        if self.training:
            noise = self._fresh_noise(n, p, scores)
        else:
            noise = self._shared_noise(p, scores).unsqueeze(0).expand(n, -1, -1)
        return _PerturbedTopKFunction.apply(scores, noise, self.k, self.sigma)

    def extra_repr(self) -> str:
        return f"k={self.k}, num_samples={self.num_samples}, sigma={self.sigma}, seed={self.seed}"
