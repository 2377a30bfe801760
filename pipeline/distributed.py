"""torch.distributed helpers that work the same under torchrun (NCCL or gloo) and in one process.

Why our own all-gather: the loss must see the global batch (contrastive negatives and the
teacher's B×B matrix are global), so features are gathered *with* gradients. The official
``AllGather`` returns only the local slice of the incoming gradient, which scales the true
gradient by 1/world_size; ``torch.distributed.nn.all_gather`` relies on all_to_all, which gloo
lacked for years. This Function sums the full gradient across ranks and keeps the local slice,
so that with every rank computing the same global loss and DDP averaging parameter gradients,
one step equals one process on the global batch (tested with 2 gloo processes).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class DistInfo:
    """Rank layout of the current process (world_size 1 when not launched by torchrun)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def launched_by_torchrun() -> bool:
    """True when torchrun (or a compatible launcher) set the rendezvous environment."""
    return "RANK" in os.environ and "WORLD_SIZE" in os.environ and int(os.environ["WORLD_SIZE"]) > 1


def init_distributed(device_type: str = "cpu") -> DistInfo:
    """Initialise the default process group if launched by torchrun; otherwise a 1-rank info.

    gloo on CPU, nccl on CUDA. Safe to call twice.
    """
    if not launched_by_torchrun():
        return DistInfo()
    if not dist.is_initialized():
        backend = "nccl" if device_type == "cuda" else "gloo"
        dist.init_process_group(backend=backend)
    info = DistInfo(
        rank=dist.get_rank(),
        world_size=dist.get_world_size(),
        local_rank=int(os.environ.get("LOCAL_RANK", "0")),
    )
    if device_type == "cuda":
        torch.cuda.set_device(info.local_rank)
    return info


class _GatherWithGrad(torch.autograd.Function):
    @staticmethod
    def forward(ctx, tensor: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        world = dist.get_world_size()
        ctx.rank = dist.get_rank()
        ctx.rows = tensor.shape[0]
        parts = [torch.empty_like(tensor) for _ in range(world)]
        dist.all_gather(parts, tensor.contiguous())
        return torch.cat(parts, dim=0)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        grad = grad.contiguous().clone()
        dist.all_reduce(grad, op=dist.ReduceOp.SUM)
        start = ctx.rank * ctx.rows
        return grad[start:start + ctx.rows]


def gather_with_grad(tensor: torch.Tensor) -> torch.Tensor:
    """Concatenate ``tensor`` (equal shapes on every rank) along dim 0 across ranks.

    Identity in a single process. Gradients flow back to each rank's own rows.
    """
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return tensor
    return _GatherWithGrad.apply(tensor)


def gather_no_grad(tensor: torch.Tensor) -> torch.Tensor:
    """All-gather without autograd (evaluation, scoring)."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return tensor
    is_bool = tensor.dtype == torch.bool
    payload = tensor.to(torch.uint8) if is_bool else tensor  # gloo has no bool all_gather
    parts = [torch.empty_like(payload) for _ in range(dist.get_world_size())]
    dist.all_gather(parts, payload.contiguous())
    out = torch.cat(parts, dim=0)
    return out.bool() if is_bool else out


def barrier() -> None:
    """A barrier when distributed, a no-op otherwise."""
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        dist.barrier()


def cleanup() -> None:
    """Destroy the process group if this process created one."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def broadcast_flag(flag: bool) -> bool:
    """Rank 0's ``flag`` on every rank (itself when not distributed).

    Why: decisions taken from validation (which runs on the main rank only), such as early
    stopping, must be the same on every rank or the others would wait in a collective forever.
    """
    if not (dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1):
        return flag
    device = torch.device("cuda", torch.cuda.current_device()) if (
        dist.get_backend() == "nccl") else torch.device("cpu")
    value = torch.tensor([1 if flag else 0], dtype=torch.uint8, device=device)
    dist.broadcast(value, src=0)
    return bool(value.item())
