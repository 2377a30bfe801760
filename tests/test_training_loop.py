"""The shared training loop: exact resume, logs, best checkpoint, schedule and batch plans."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from pipeline.distributed import DistInfo
from pipeline.errors import InputError
from pipeline.train.batches import global_batches, rank_slice, steps_per_epoch
from pipeline.train.loop import LoopConfig, run_training
from pipeline.train.schedule import warmup_cosine, warmup_cosine_factor


class Toy(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(4, 3)
        self.drop = nn.Dropout(0.5)  # makes RNG state matter for exact resume

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.lin(self.drop(x))


DATA_X = torch.randn(40, 4, generator=torch.Generator().manual_seed(0))
DATA_Y = torch.randint(0, 3, (40,), generator=torch.Generator().manual_seed(1))


def _run(work: Path, epochs: int, evaluate=None, stop_after: int | None = None):
    torch.manual_seed(123)
    model = Toy()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    sched = warmup_cosine(opt, total_steps=3 * 4, warmup_fraction=0.25)

    def batches(epoch: int):
        for idx in global_batches(40, 10, seed=7, epoch=epoch):
            yield torch.from_numpy(idx)

    def step_fn(m: nn.Module, idx: torch.Tensor) -> dict[str, torch.Tensor]:
        loss = nn.functional.cross_entropy(m(DATA_X[idx]), DATA_Y[idx])
        return {"total": loss, "gt": loss.detach()}

    result = run_training(
        model=model, optimizer=opt, scheduler=sched, step_fn=step_fn,
        batches_for_epoch=batches, steps_per_epoch=4,
        config=LoopConfig(epochs=epochs, seed=5, log_every=1, fingerprint={"run": "toy"}),
        work_dir=work, device=torch.device("cpu"), dist_info=DistInfo(), evaluate=evaluate,
        save_best=lambda p: torch.save(model.state_dict(), p),
    )
    return model, result


def test_resume_continues_exactly(tmp_path: Path) -> None:
    straight, _ = _run(tmp_path / "a", epochs=3)
    _run(tmp_path / "b", epochs=1)
    resumed, result = _run(tmp_path / "b", epochs=3)
    assert result.resumed_from_epoch == 1
    for (name, p), q in zip(straight.state_dict().items(), resumed.state_dict().values(),
                            strict=True):
        assert torch.equal(p, q), name
    log_a = (tmp_path / "a" / "train_log.tsv").read_text().splitlines()
    log_b = (tmp_path / "b" / "train_log.tsv").read_text().splitlines()
    assert len(log_a) == 1 + 12
    # identical losses (the lr/loss columns; timing columns differ)
    cols = log_a[0].split("\t")
    keep = [cols.index(c) for c in ("step", "epoch", "lr", "total")]
    strip = lambda lines: [[ln.split("\t")[i] for i in keep] for ln in lines[1:]]  # noqa: E731
    assert strip(log_a) == strip(log_b)


def test_resume_refuses_other_settings(tmp_path: Path) -> None:
    _run(tmp_path, epochs=1)
    torch.manual_seed(0)
    model = Toy()
    opt = torch.optim.AdamW(model.parameters())
    with pytest.raises(InputError, match="different settings"):
        run_training(
            model=model, optimizer=opt, scheduler=warmup_cosine(opt, 4, 0.0),
            step_fn=lambda m, b: {"total": m(b).sum()}, batches_for_epoch=lambda e: [],
            steps_per_epoch=0, config=LoopConfig(epochs=2, fingerprint={"run": "other"}),
            work_dir=tmp_path, device=torch.device("cpu"), dist_info=DistInfo(),
        )


def test_best_epoch_is_kept(tmp_path: Path) -> None:
    scores = iter([10.0, 30.0, 20.0])
    _, result = _run(tmp_path, epochs=3, evaluate=lambda m, e: {"R1": next(scores)})
    assert result.best_epoch == 1
    assert result.best_metrics == {"R1": 30.0}
    assert (tmp_path / "best.pt").exists()
    val = (tmp_path / "val_log.tsv").read_text().splitlines()
    assert len(val) == 4 and val[2].split("\t")[:2] == ["1", "30"]


def test_warmup_cosine_shape() -> None:
    total = 100
    factors = [warmup_cosine_factor(s, total, 0.1) for s in range(total)]
    assert factors[0] == 0.0
    assert factors[5] == pytest.approx(0.5)
    # official BertAdam warmup_cosine: after warm-up the cosine is of the *overall* progress
    assert max(factors) == pytest.approx(0.5 * (1 + np.cos(np.pi * 0.1)))
    assert all(a >= b for a, b in zip(factors[10:], factors[11:], strict=False))
    assert factors[-1] < 0.01


def test_batch_plan_deterministic_and_split() -> None:
    a = global_batches(25, 6, seed=3, epoch=2)
    b = global_batches(25, 6, seed=3, epoch=2)
    c = global_batches(25, 6, seed=3, epoch=3)
    assert len(a) == 4 == steps_per_epoch(25, 6)
    assert all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))
    assert not all(np.array_equal(x, y) for x, y in zip(a, c, strict=True))
    assert len(set(np.concatenate(a).tolist())) == 24
    halves = [rank_slice(a[0], r, 2) for r in range(2)]
    assert np.array_equal(np.concatenate(halves), a[0])
    with pytest.raises(ValueError, match="split evenly"):
        rank_slice(a[0], 0, 4)
