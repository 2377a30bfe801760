"""Plateau training: early stopping with a patience, the recorded status, and its warning."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from pipeline.distributed import DistInfo
from pipeline.plateau import (
    FIXED_BUDGET_WINDOW,
    PlateauStatus,
    should_stop,
    status_from_summary,
    status_of,
)
from pipeline.train.batches import global_batches
from pipeline.train.loop import LoopConfig, run_training
from pipeline.train.schedule import warmup_cosine

X = torch.randn(40, 4, generator=torch.Generator().manual_seed(0))
Y = torch.randint(0, 3, (40,), generator=torch.Generator().manual_seed(1))


def _train(work: Path, scores: list[float], epochs: int, patience: int):
    """A toy run whose validation R1 at epoch e is ``scores[e]``; returns (result, evaluated)."""
    torch.manual_seed(0)
    model = nn.Linear(4, 3)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    evaluated: list[int] = []

    def evaluate(_m: nn.Module, epoch: int) -> dict[str, float]:
        evaluated.append(epoch)
        return {"R1": scores[epoch]}

    def step_fn(m: nn.Module, idx: torch.Tensor) -> dict[str, torch.Tensor]:
        loss = nn.functional.cross_entropy(m(X[idx]), Y[idx])
        return {"total": loss}

    result = run_training(
        model=model, optimizer=opt, scheduler=warmup_cosine(opt, 4 * epochs, 0.1),
        step_fn=step_fn,
        batches_for_epoch=lambda e: (torch.from_numpy(i) for i in global_batches(40, 10, 3, e)),
        steps_per_epoch=4,
        config=LoopConfig(epochs=epochs, patience=patience, log_every=2,
                          fingerprint={"toy": 1}),
        work_dir=work, device=torch.device("cpu"), dist_info=DistInfo(), evaluate=evaluate,
        save_best=lambda p: torch.save(model.state_dict(), p),
    )
    return result, evaluated


RISE_THEN_FALL = [1, 2, 5, 4, 3, 4, 4, 2, 1, 1, 1, 1]


def test_patience_stops_after_that_many_epochs_without_a_new_best(tmp_path: Path) -> None:
    result, evaluated = _train(tmp_path / "w", RISE_THEN_FALL, epochs=12, patience=3)
    assert result.best_epoch == 2
    assert evaluated == [0, 1, 2, 3, 4, 5]  # epochs 3, 4, 5 bring nothing new: stop after 5
    assert result.stopped_early and result.epochs_run == 6
    assert result.steps == 6 * 4
    assert status_of(result.best_epoch, result.epochs_run, True, 3).reached


def test_zero_patience_trains_every_epoch(tmp_path: Path) -> None:
    result, evaluated = _train(tmp_path / "w", RISE_THEN_FALL, epochs=12, patience=0)
    assert evaluated == list(range(12))
    assert not result.stopped_early and result.epochs_run == 12 and result.best_epoch == 2


def test_a_resumed_early_stopped_run_trains_no_further(tmp_path: Path) -> None:
    first, _ = _train(tmp_path / "w", RISE_THEN_FALL, epochs=12, patience=3)
    again, evaluated = _train(tmp_path / "w", RISE_THEN_FALL, epochs=12, patience=3)
    assert evaluated == []  # state.pt says it stopped: nothing more is trained
    assert again.stopped_early and again.epochs_run == first.epochs_run
    assert again.best_epoch == first.best_epoch and again.steps == first.steps


def test_still_rising_run_is_flagged(tmp_path: Path) -> None:
    rising = [float(i) for i in range(8)]
    result, _ = _train(tmp_path / "w", rising, epochs=8, patience=3)
    status = status_of(result.best_epoch, result.epochs_run, result.stopped_early, 3)
    assert not result.stopped_early and result.best_epoch == 7
    assert not status.reached
    text = status.warning("student xclip")
    assert text is not None and "8 of 8" in text and "--epochs" in text


@pytest.mark.parametrize(("best", "run", "early", "patience", "reached"), [
    (27, 40, False, 8, True),    # 12 epochs after the best: on the plateau
    (35, 40, False, 8, False),   # 4 epochs after the best < patience: still rising
    (35, 44, True, 8, True),     # stopped early: by construction on the plateau
    (8, 12, False, 0, True),     # fixed budget: 3 epochs after the best
    (9, 12, False, 0, False),    # fixed budget: the best is among the last 3
])
def test_reached_rule(best: int, run: int, early: bool, patience: int, reached: bool) -> None:
    status = status_of(best, run, early, patience)
    assert status.window == (patience or FIXED_BUDGET_WINDOW)
    assert status.reached is reached
    assert (status.warning("m") is None) is reached


def test_a_late_best_by_one_caption_is_a_plateau() -> None:
    flat = [{"R1": v} for v in [1, 5, 9, 10, 10, 10, 9.8, 10.2, 10.4, 10.4]]
    status = status_of(9, 10, False, 3, flat)  # best at the very end, but +0.4 over epoch 3
    assert status.late_rise == pytest.approx(0.4) and status.reached
    rising = [{"R1": v} for v in [1, 5, 9, 10, 10, 10, 10.5, 11, 12, 12.5]]
    status = status_of(9, 10, False, 3, rising)
    assert status.late_rise == pytest.approx(2.0) and not status.reached
    assert "+2.00 over the earlier best" in status.warning("m")


def test_should_stop() -> None:
    assert not should_stop(5, 2, 0)
    assert not should_stop(4, 2, 3)
    assert should_stop(5, 2, 3)


def test_summary_round_trip() -> None:
    status = PlateauStatus(best_epoch=10, epochs_run=19, stopped_early=True, window=8,
                           late_rise=-1.5)
    summary = {"best_epoch": 10, "best_metrics": {"R1": 3.0}, **status.as_summary()}
    assert status_from_summary(summary) == status
    assert summary["plateau"] is True
    assert status_from_summary({"best_epoch": 3, "best_metrics": {"R1": 1.0}}) is None  # old
    no_val = {"best_epoch": 5, "best_metrics": {}, **status.as_summary()}
    assert status_from_summary(no_val) is None  # no validation: nothing was selected
