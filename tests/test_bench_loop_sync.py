"""The training loop without per-step host syncs logs exactly what it logged before.

Before: every step converted each loss part with ``float()`` and tested ``torch.isfinite(loss)``
in Python (a device sync each, on a GPU). Now the parts are summed on the device and checked at
log steps only; the logged means and the non-finite error must not change.
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from torch import nn

from pipeline.distributed import DistInfo
from pipeline.train.batches import global_batches
from pipeline.train.loop import LoopConfig, run_training
from pipeline.train.schedule import warmup_cosine

X = torch.randn(48, 4, generator=torch.Generator().manual_seed(0))
Y = torch.randint(0, 3, (48,), generator=torch.Generator().manual_seed(1))


class Spy(torch.Tensor):
    """Counts conversions to Python values (each one is a host-device sync on a GPU)."""

    conversions = 0

    @classmethod
    def __torch_function__(cls, func, types, args=(), kwargs=None):
        if getattr(func, "__name__", "") in ("__float__", "item", "__bool__", "tolist"):
            Spy.conversions += 1
        return super().__torch_function__(func, types, args, kwargs or {})


def _train(work: Path, *, log_every: int, nan_at: int | None = None, spy: bool = False,
           epochs: int = 2) -> list[float]:
    torch.manual_seed(0)
    model = nn.Linear(4, 3)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    seen: list[float] = []

    def batches(epoch: int):
        for idx in global_batches(48, 8, seed=3, epoch=epoch):
            yield torch.from_numpy(idx)

    def step_fn(m: nn.Module, idx: torch.Tensor) -> dict[str, torch.Tensor]:
        loss = nn.functional.cross_entropy(m(X[idx]), Y[idx])
        if nan_at is not None and len(seen) == nan_at:
            loss = loss * float("nan")
        seen.append(loss.item())
        gt = loss.detach() * 0.5
        return {"total": loss, "gt": gt.as_subclass(Spy) if spy else gt}

    run_training(model=model, optimizer=opt, scheduler=warmup_cosine(opt, 12, 0.1),
                 step_fn=step_fn, batches_for_epoch=batches, steps_per_epoch=6,
                 config=LoopConfig(epochs=epochs, log_every=log_every,
                                   fingerprint={"t": "sync"}),
                 work_dir=work, device=torch.device("cpu"), dist_info=DistInfo())
    return seen


def _log(work: Path) -> list[dict[str, str]]:
    lines = (work / "train_log.tsv").read_text().splitlines()
    header = lines[0].split("\t")
    return [dict(zip(header, line.split("\t"), strict=True)) for line in lines[1:]]


@pytest.mark.parametrize("log_every", [1, 4])
def test_logged_means_equal_python_float_sums(tmp_path: Path, log_every: int) -> None:
    seen = _train(tmp_path, log_every=log_every)
    rows = _log(tmp_path)
    assert [int(r["step"]) for r in rows] == list(range(log_every, 13, log_every))
    last = 0
    for row in rows:
        step = int(row["step"])
        # The running means restart at each log row and at each epoch (6 steps).
        start = max(last, (step - 1) // 6 * 6)
        window, last = seen[start:step], step
        # The former loop: a Python float sum of float(value), formatted with %.6g.
        total = 0.0
        for v in window:
            total += v
        assert row["total"] == f"{total / len(window):.6g}"
        assert float(row["gt"]) == pytest.approx(0.5 * total / len(window), rel=1e-5)


def test_no_python_conversion_between_log_steps(tmp_path: Path) -> None:
    Spy.conversions = 0
    _train(tmp_path, log_every=3, spy=True, epochs=1)
    # 6 steps, log every 3: one float() of the summed part per log row, nothing per step.
    assert Spy.conversions == 2


def test_non_finite_loss_still_raises_with_its_step(tmp_path: Path) -> None:
    with pytest.raises(FloatingPointError, match=r"non-finite loss at epoch 0 step 2\b"):
        _train(tmp_path, log_every=100, nan_at=2)
    # Detected by the end-of-epoch check at the latest, before any checkpoint is written.
    assert not (tmp_path / "state.pt").exists()
    with pytest.raises(FloatingPointError, match=r"epoch 1 step 7\b"):
        _train(tmp_path / "b", log_every=4, nan_at=7)
    state = torch.load(tmp_path / "b" / "state.pt", weights_only=False)
    assert state["epoch"] == 1 and all(math.isfinite(v.abs().sum().item())
                                       for v in state["model"].values())
