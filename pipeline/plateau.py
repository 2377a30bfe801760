"""When a training run has reached its validation plateau: one rule for the loop, the CLI and
the report.

Why a rule at all: a comparison is decided by its weakest run, and a model stopped while its
validation R@1 is still rising is not at its best. The embedded default once stopped its students
at 12 epochs while the teacher had 24; every student was still improving, and the table said
distillation added nothing. So the loop can stop on a plateau (``patience`` epochs in a row with
no new best), and every summary says whether the run ended on one; ``student train``/``teacher
train`` warn and ``teachclip report`` marks the rows that did not.

Epochs are counted from 0 here, as in ``val_log.tsv``; people read them from 1 (``describe``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

#: Without early stopping, a best epoch among the last this many epochs means the run was
#: probably stopped too early (with early stopping the window is the patience itself).
FIXED_BUDGET_WINDOW = 3
#: A late best that beats every earlier epoch by no more than this (in the selection metric's
#: units: R@1 points) is noise, not a rise. 0.5 is about one caption of the embedded default's
#: 240 validation captions; under a cosine schedule the last epochs, at a near-zero learning
#: rate, often edge past the earlier best by one caption although the run has converged.
MIN_RISE = 0.5


def should_stop(epoch: int, best_epoch: int, patience: int) -> bool:
    """True after ``epoch`` when ``patience`` > 0 epochs in a row brought no new best."""
    return patience > 0 and best_epoch >= 0 and epoch - best_epoch >= patience


def plateau_window(patience: int) -> int:
    """How many final epochs without a new best a run needs to count as on its plateau."""
    return patience if patience > 0 else FIXED_BUDGET_WINDOW


@dataclass(frozen=True)
class PlateauStatus:
    """Whether a finished run ended on its validation plateau, and the numbers saying so."""

    best_epoch: int  # 0-based
    epochs_run: int
    stopped_early: bool
    window: int
    #: Best score of the last ``window`` epochs minus the best before them (None: unknown).
    late_rise: float | None = None

    @property
    def reached(self) -> bool:
        """Early-stopped; or the best epoch lies at least ``window`` epochs before the end; or
        the last ``window`` epochs rose by at most :data:`MIN_RISE` over the earlier best."""
        if self.stopped_early or self.epochs_run - 1 - self.best_epoch >= self.window:
            return True
        return self.late_rise is not None and self.late_rise <= MIN_RISE

    def describe(self) -> str:
        """``best epoch 28 of 40`` (counted from 1) plus how the run ended."""
        how = "stopped early" if self.stopped_early else "full budget"
        return f"best epoch {self.best_epoch + 1} of {self.epochs_run} ({how})"

    def warning(self, name: str) -> str | None:
        """The ``Warning:`` text for a run stopped before its plateau, else None."""
        if self.reached:
            return None
        rise = f", {self.late_rise:+.2f} over the earlier best" if self.late_rise else ""
        return (f"{name}: the best validation epoch is {self.best_epoch + 1} of "
                f"{self.epochs_run}, within the last {self.window}{rise}: the model was "
                "probably still improving when training stopped; give more --epochs (with "
                "--patience the run stops by itself once validation stops rising)")

    def as_summary(self) -> dict[str, Any]:
        """The keys a run's summary.json records (``report`` reads them back)."""
        return {"epochs_run": self.epochs_run, "stopped_early": self.stopped_early,
                "plateau_window": self.window, "plateau_late_rise": self.late_rise,
                "plateau": self.reached}


def late_rise(history: Sequence[Mapping[str, Any]], window: int, metric: str = "R1"
              ) -> float | None:
    """Best ``metric`` over the last ``window`` validated epochs minus the best before them."""
    scores = [float(h[metric]) for h in history if metric in h]
    if len(scores) <= window:
        return None
    return max(scores[-window:]) - max(scores[:-window])


def status_of(best_epoch: int, epochs_run: int, stopped_early: bool, patience: int,
              history: Sequence[Mapping[str, Any]] = (), metric: str = "R1") -> PlateauStatus:
    """The status of a run that trained with ``patience`` (0 = fixed budget); ``history`` is
    its per-epoch validation metrics (``TrainResult.val_history``)."""
    window = plateau_window(patience)
    return PlateauStatus(best_epoch, epochs_run, stopped_early, window,
                         late_rise(history, window, metric))


def status_from_summary(summary: Mapping[str, Any]) -> PlateauStatus | None:
    """The status recorded in a summary.json (None for runs written before it was recorded,
    or without validation, where no epoch was selected)."""
    try:
        best, run = int(summary["best_epoch"]), int(summary["epochs_run"])
        window = int(summary["plateau_window"])
    except (KeyError, TypeError, ValueError):
        return None
    if best < 0 or not summary.get("best_metrics"):
        return None
    rise = summary.get("plateau_late_rise")
    return PlateauStatus(best, run, bool(summary.get("stopped_early", False)), window,
                         float(rise) if isinstance(rise, (int, float)) else None)
