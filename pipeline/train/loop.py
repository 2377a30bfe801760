"""The training loop shared by teacher and student training.

It owns what both need and what is easy to get subtly wrong: AdamW steps under autocast, gradient
clipping, the warm-up/cosine schedule, DDP wrapping, per-epoch atomic checkpoints holding model,
optimiser, scheduler, grad-scaler, RNG states and step (so a resumed run continues *exactly*),
TSV training curves that ``dvc plots`` renders, validation each epoch and the best checkpoint.
The model-specific part is a ``step_fn(model, batch) -> dict`` returning the loss parts.
"""

from __future__ import annotations

import hashlib
import json
import random
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from pipeline.atomic import atomic_output
from pipeline.distributed import DistInfo, barrier, broadcast_flag
from pipeline.errors import InputError, TeachclipError
from pipeline.plateau import should_stop
from pipeline.precision import autocast_context

STATE_FILE = "state.pt"
TRAIN_LOG = "train_log.tsv"
VAL_LOG = "val_log.tsv"
BEST_FILE = "best.pt"


@dataclass
class LoopConfig:
    """Loop settings; everything else (lr, batch) lives with the caller's optimiser/batches."""

    epochs: int
    seed: int = 42
    grad_clip: float = 1.0
    amp: str = "none"  # none | bf16 | fp16 (autocast; fp16 adds a GradScaler)
    log_every: int = 10
    select_metric: str = "R1"
    #: Early stopping: end the run once ``patience`` epochs in a row bring no new best
    #: validation score (0 = train every epoch). See :mod:`pipeline.plateau`.
    patience: int = 0
    fingerprint: dict[str, Any] = field(default_factory=dict)  # run identity for safe resume


@dataclass
class TrainResult:
    """What a finished run reports: per-epoch validation metrics and the best epoch."""

    best_epoch: int
    best_metrics: dict[str, float]
    val_history: list[dict[str, float]]
    steps: int
    resumed_from_epoch: int
    epochs_run: int = 0
    stopped_early: bool = False


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (CPU and CUDA) RNGs."""
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)


def _rng_state() -> dict[str, Any]:
    state: dict[str, Any] = {
        "python": random.getstate(),
        "numpy": np.random.get_state(),
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: Mapping[str, Any]) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def fingerprint_hash(fingerprint: Mapping[str, Any]) -> str:
    """Stable hash of the run's identity (params, inputs); resume refuses a different one."""
    blob = json.dumps(fingerprint, sort_keys=True, default=str).encode("utf-8")
    return hashlib.sha256(blob).hexdigest()


def _truncate_tsv(path: Path, keep: Callable[[dict[str, str]], bool]) -> None:
    """Drop log rows written after the checkpoint we resume from (so logs match a clean run)."""
    if not path.exists():
        return
    lines = path.read_text(encoding="utf-8").splitlines()
    if not lines:
        return
    header = lines[0].split("\t")
    kept = [lines[0]] + [
        line for line in lines[1:] if keep(dict(zip(header, line.split("\t"), strict=False)))
    ]
    path.write_text("\n".join(kept) + "\n", encoding="utf-8")


def _append_tsv(path: Path, row: Mapping[str, Any]) -> None:
    new = not path.exists()
    with open(path, "a", encoding="utf-8") as handle:
        if new:
            handle.write("\t".join(row.keys()) + "\n")
        handle.write("\t".join(_fmt(v) for v in row.values()) + "\n")


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.6g}"
    return str(value)


class NonFiniteLossError(TeachclipError, FloatingPointError):
    """The loss became NaN/inf: the run stops (the last epoch checkpoint stays for a resume)."""


def _flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(value, Mapping):
        out: dict[str, Any] = {}
        for key, item in value.items():
            out.update(_flatten(item, f"{prefix}{key}."))
        return out
    return {prefix[:-1]: value}


def fingerprint_diff(old: Mapping[str, Any] | None, new: Mapping[str, Any], limit: int = 5
                     ) -> str:
    """``"key: old -> new"`` for the settings that differ (why a resume was refused)."""
    if not isinstance(old, Mapping):
        return ""
    a, b = _flatten(old), _flatten(new)
    keys = sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k))
    shown = [f"{k}: {a.get(k, '(none)')!r} -> {b.get(k, '(none)')!r}" for k in keys[:limit]]
    more = f" and {len(keys) - limit} more" if len(keys) > limit else ""
    return "; ".join(shown) + more


def _refuse_resume(work_dir: Path, state: Mapping[str, Any], config: LoopConfig) -> InputError:
    """The error for a work directory that holds an interrupted run with other settings."""
    diff = fingerprint_diff((state.get("config") or {}).get("fingerprint"), config.fingerprint)
    what = f" (differs: {diff})" if diff else ""
    return InputError(
        f"an interrupted run with different settings or inputs is waiting here{what}: rerun with "
        "the settings and inputs of that run to resume it, or delete this directory to start "
        "over", file=work_dir)


def _check_finite(flags: list[torch.Tensor], epoch: int, step: int) -> None:
    """Raise for the first non-finite loss among the steps since the last check; clears ``flags``.

    One host-device sync per call. ``flags[i]`` belongs to step ``step - len(flags) + i``
    (0-based, as counted before that step's update). The updates of the steps in between have
    been applied, but nothing was checkpointed since: a failed run resumes from the last
    epoch checkpoint, as before.
    """
    if not flags:
        return
    ok = torch.stack(flags).cpu()
    first = len(flags) if bool(ok.all()) else int((~ok).nonzero()[0, 0])
    start = step - len(flags)
    flags.clear()
    if first < len(ok):
        raise NonFiniteLossError(
            f"non-finite loss at epoch {epoch} step {start + first}: training stopped (a rerun "
            "resumes from the last finished epoch); check the inputs (`teachclip cache verify`, "
            "`teachclip frames verify`) or lower --lr")


@dataclass
class _Progress:
    """Everything the loop carries from epoch to epoch (and saves in ``state.pt``)."""

    epoch: int = 0  # next epoch to run
    step: int = 0
    best_metric: float = -float("inf")
    best_epoch: int = -1
    best_metrics: dict[str, float] = field(default_factory=dict)
    history: list[dict[str, float]] = field(default_factory=list)
    stopped_early: bool = False


@dataclass
class _Run:
    """The objects one run steps; bundled so the per-epoch helpers stay short."""

    model: nn.Module
    step_model: nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    scaler: torch.amp.GradScaler
    config: LoopConfig
    work_dir: Path
    device: torch.device
    dist_info: DistInfo


def run_training(
    *,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    step_fn: Callable[[nn.Module, Any], Mapping[str, torch.Tensor]],
    batches_for_epoch: Callable[[int], Iterable[Any]],
    steps_per_epoch: int,
    config: LoopConfig,
    work_dir: Path,
    device: torch.device,
    dist_info: DistInfo,
    evaluate: Callable[[nn.Module, int], dict[str, float]] | None = None,
    save_best: Callable[[Path], None] | None = None,
    after_step: Callable[[], None] | None = None,
    batch_size_of: Callable[[Any], int] | None = None,
    on_progress: Callable[[int], None] | None = None,
) -> TrainResult:
    """Train for ``config.epochs`` epochs, resuming from ``work_dir/state.pt`` when present.

    ``step_fn`` receives the (possibly DDP-wrapped) model and a batch and returns a dict with at
    least ``total`` (a scalar tensor); other scalar entries are logged. ``evaluate`` runs on the
    main rank after every epoch and returns metrics; the epoch with the highest
    ``config.select_metric`` is kept via ``save_best(path)``. Only rank 0 writes files.
    """
    work_dir.mkdir(parents=True, exist_ok=True)
    scaler = torch.amp.GradScaler(device.type, enabled=config.amp == "fp16")
    run = _Run(model, model, optimizer, scheduler, scaler, config, work_dir, device, dist_info)
    progress = _restore(run)
    resumed_from = progress.epoch
    if dist_info.enabled:
        ddp_kwargs: dict[str, Any] = {}
        if device.type == "cuda":
            ddp_kwargs["device_ids"] = [device.index]
        run.step_model = nn.parallel.DistributedDataParallel(model, **ddp_kwargs)
    for epoch in range(progress.epoch, config.epochs):
        if progress.stopped_early:
            break  # a resumed run that had already stopped early is finished
        progress.step = _train_epoch(run, epoch, progress.step, batches_for_epoch(epoch),
                                     step_fn, after_step, batch_size_of, on_progress)
        _select_epoch(run, progress, epoch, evaluate, save_best)
        progress.epoch = epoch + 1
        progress.stopped_early = broadcast_flag(
            evaluate is not None and dist_info.is_main
            and should_stop(epoch, progress.best_epoch, config.patience))
        if dist_info.is_main:
            _save_state(run, progress)
        barrier()
    return TrainResult(progress.best_epoch, progress.best_metrics, progress.history,
                       progress.step, resumed_from, progress.epoch, progress.stopped_early)


def _restore(run: _Run) -> _Progress:
    """Progress of an interrupted run with the same fingerprint, or a fresh, seeded start."""
    state_path = run.work_dir / STATE_FILE
    if not state_path.exists():
        seed_everything(run.config.seed + run.dist_info.rank)
        if run.dist_info.is_main:
            for name in (TRAIN_LOG, VAL_LOG):
                (run.work_dir / name).unlink(missing_ok=True)
        return _Progress()
    state = torch.load(state_path, map_location="cpu", weights_only=False)
    if state.get("fingerprint") != fingerprint_hash(run.config.fingerprint):
        raise _refuse_resume(run.work_dir, state, run.config)
    run.model.load_state_dict(state["model"])
    run.optimizer.load_state_dict(state["optimizer"])
    run.scheduler.load_state_dict(state["scheduler"])
    run.scaler.load_state_dict(state["scaler"])
    _set_rng_state(state["rng"])
    progress = _Progress(state["epoch"], state["step"], state["best_metric"],
                         state["best_epoch"], state["best_metrics"], state["history"],
                         bool(state.get("stopped_early", False)))
    if run.dist_info.is_main:
        _truncate_tsv(run.work_dir / TRAIN_LOG, lambda row: int(row["step"]) <= progress.step)
        _truncate_tsv(run.work_dir / VAL_LOG, lambda row: int(row["epoch"]) < progress.epoch)
    return progress


def _train_epoch(run: _Run, epoch: int, step: int, batches: Iterable[Any],
                 step_fn: Callable[[nn.Module, Any], Mapping[str, torch.Tensor]],
                 after_step: Callable[[], None] | None,
                 batch_size_of: Callable[[Any], int] | None,
                 on_progress: Callable[[int], None] | None) -> int:
    """One epoch of optimiser steps with logging; returns the global step count after it.

    No host-device sync inside a step: loss parts are summed on the device (float64, so the
    logged means equal the former Python-float sums exactly) and the finiteness flags are checked
    only at log steps and at the end of the epoch (_check_finite).
    """
    run.model.train()
    trainable = [p for p in run.model.parameters() if p.requires_grad]
    timing = {"wait": 0.0, "compute": 0.0, "clips": 0}
    running: dict[str, torch.Tensor] = {}
    finite_flags: list[torch.Tensor] = []
    n_running = 0
    tick = time.perf_counter()
    for batch in batches:
        got_batch = time.perf_counter()
        timing["wait"] += got_batch - tick
        with autocast_context(run.device, run.config.amp):
            parts = step_fn(run.step_model, batch)
        loss = parts["total"]
        finite_flags.append(torch.isfinite(loss.detach()))
        run.optimizer.zero_grad(set_to_none=True)
        run.scaler.scale(loss).backward()
        run.scaler.unscale_(run.optimizer)
        if run.config.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(trainable, run.config.grad_clip)
        run.scaler.step(run.optimizer)
        run.scaler.update()
        run.scheduler.step()
        if after_step is not None:
            after_step()
        step += 1
        for key, value in parts.items():
            value = value.detach().to(torch.float64)
            running[key] = running[key] + value if key in running else value
        n_running += 1
        timing["clips"] += batch_size_of(batch) if batch_size_of else 0
        tick = time.perf_counter()
        timing["compute"] += tick - got_batch
        if step % run.config.log_every == 0:
            _check_finite(finite_flags, epoch, step)
            if run.dist_info.is_main:
                _log_step(run, epoch, step, running, n_running, timing)
            running, n_running = {}, 0
        if on_progress is not None:
            on_progress(1)
    _check_finite(finite_flags, epoch, step)
    return step


def _log_step(run: _Run, epoch: int, step: int, running: Mapping[str, torch.Tensor],
              n_running: int, timing: Mapping[str, float]) -> None:
    """One train_log.tsv row: mean loss parts since the last row, lr, throughput, data wait."""
    elapsed = max(timing["wait"] + timing["compute"], 1e-9)
    row: dict[str, Any] = {"step": step, "epoch": epoch,
                           "lr": run.optimizer.param_groups[0]["lr"]}
    row.update({k: float(v) / n_running for k, v in running.items()})
    row["clips_per_s"] = timing["clips"] * run.dist_info.world_size / elapsed
    row["data_wait_fraction"] = timing["wait"] / elapsed
    _append_tsv(run.work_dir / TRAIN_LOG, row)


def _select_epoch(run: _Run, progress: _Progress, epoch: int,
                  evaluate: Callable[[nn.Module, int], dict[str, float]] | None,
                  save_best: Callable[[Path], None] | None) -> None:
    """Validate (main rank) and keep the epoch if it is the best so far (or the last, when there
    is no validation)."""
    if not run.dist_info.is_main:
        return
    if evaluate is None:
        if save_best is not None:
            progress.best_epoch = epoch
            save_best(run.work_dir / BEST_FILE)
        return
    run.model.eval()
    with torch.no_grad():
        metrics = evaluate(run.model, epoch)
    progress.history.append({"epoch": epoch, **metrics})
    _append_tsv(run.work_dir / VAL_LOG, {"epoch": epoch, **metrics})
    score = metrics.get(run.config.select_metric, -float("inf"))
    if score > progress.best_metric:
        progress.best_metric, progress.best_epoch = score, epoch
        progress.best_metrics = dict(metrics)
        if save_best is not None:
            save_best(run.work_dir / BEST_FILE)


def _save_state(run: _Run, progress: _Progress) -> None:
    """Everything a resume needs, written atomically after each epoch."""
    with atomic_output(run.work_dir / STATE_FILE) as tmp:
        torch.save({
            "fingerprint": fingerprint_hash(run.config.fingerprint),
            "model": run.model.state_dict(),
            "optimizer": run.optimizer.state_dict(),
            "scheduler": run.scheduler.state_dict(),
            "scaler": run.scaler.state_dict(),
            "rng": _rng_state(),
            "epoch": progress.epoch,
            "step": progress.step,
            "best_metric": progress.best_metric,
            "best_epoch": progress.best_epoch,
            "best_metrics": progress.best_metrics,
            "history": progress.history,
            "stopped_early": progress.stopped_early,
            "config": asdict(run.config),
        }, tmp)
