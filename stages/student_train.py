"""``teachclip student train``: the CLIP4Clip+AFA student from cached teacher soft labels.

Option precedence: command line > ``students: {NAME: {...}}`` in params.yaml (with ``--name``) >
the ``student: {train: {...}}`` section > built-in defaults (SPEC §4/§6).
"""

from __future__ import annotations

import json
from typing import Any

import click
import torch
from tqdm import tqdm

from pipeline.data.frames_store import FramesReader
from pipeline.data.manifest import Manifest
from pipeline.distributed import cleanup, init_distributed
from pipeline.errors import InputError
from pipeline.models.student import StudentConfig
from pipeline.train.losses import COARSE_METHODS, FINE_METHODS
from pipeline.train.setup import OptimConfig
from pipeline.train.student import StudentTrainConfig
from pipeline.train.student_run import run_student
from stages.groups import student
from stages.options import resolve_device
from stages.params import apply_entry, named_entry

_OPT = OptimConfig()
_CFG = StudentTrainConfig()
_ARCH = StudentConfig()


def apply_named_run(ctx: click.Context, name: str | None, values: dict[str, Any]) -> None:
    """Fill options not given on the command line from ``params['students'][name]``."""
    run = named_entry(ctx, "students", name)
    if "cache" not in run and "caches" in run:
        run["cache"] = run.pop("caches")
    if "cache" in run:
        run["cache"] = tuple(run["cache"] or ())
    apply_entry(ctx, run, values, f"students.{name}")


def parse_loss_weights(text: str | None) -> tuple[float, float, float] | None:
    """``gt,coarse,fine`` → three floats (None: SPEC §4 defaults for the coarse method)."""
    if text is None or str(text).strip() == "":
        return None
    if isinstance(text, (list, tuple)):
        parts = [float(v) for v in text]
    else:
        try:
            parts = [float(v) for v in str(text).split(",")]
        except ValueError:
            raise InputError(f"--loss-weights must be three numbers gt,coarse,fine, "
                             f"got {text!r}") from None
    if len(parts) != 3:
        raise InputError(f"--loss-weights must be three numbers gt,coarse,fine, got {text!r}")
    return parts[0], parts[1], parts[2]


@student.command("train")
@click.option("--out", required=True, type=click.Path(file_okay=False),
              help="Output directory (model.pt, train_log.tsv, val_log.tsv, summary.json).")
@click.option("--name", default=None, help="Run name; reads params.yaml students.NAME.")
@click.option("--frames", "frames_path", required=True, type=click.Path(dir_okay=False))
@click.option("--manifest", "manifest_dir", required=True, type=click.Path(file_okay=False))
@click.option("--cache", multiple=True, type=click.Path(dir_okay=False),
              help="Teacher cache .h5 (repeat for several teachers; none = baseline).")
@click.option("--clip", default=_CFG.clip, show_default=True,
              help="CLIP source: tiny[:json], a Hugging Face dir or an OpenAI .pt.")
@click.option("--temporal", type=click.Choice(["seqTransf", "meanP"]), default=_ARCH.temporal,
              show_default=True)
@click.option("--aggregation", type=click.Choice(["afa", "mean"]), default=_ARCH.aggregation,
              show_default=True)
@click.option("--max-words", type=int, default=_CFG.max_words, show_default=True)
@click.option("--coarse", type=click.Choice(COARSE_METHODS), default=_CFG.coarse,
              show_default=True)
@click.option("--fine", type=click.Choice(FINE_METHODS), default=_CFG.fine, show_default=True)
@click.option("--beta", type=float, default=_CFG.beta, show_default=True,
              help="Distillation temperature dividing student and teacher logits.")
@click.option("--loss-weights", default=None,
              help="gt,coarse,fine weights (default: SPEC §4 for the coarse method).")
@click.option("--epochs", type=int, default=_OPT.epochs, show_default=True)
@click.option("--batch-size", type=int, default=_OPT.batch_size, show_default=True,
              help="Global batch (split over torchrun processes).")
@click.option("--lr", type=float, default=_OPT.lr, show_default=True)
@click.option("--coef-lr", type=float, default=_OPT.coef_lr, show_default=True,
              help="CLIP lr = lr × coef-lr.")
@click.option("--afa-lr-multiplier", type=float, default=_OPT.afa_lr_multiplier,
              show_default=True)
@click.option("--weight-decay", type=float, default=_OPT.weight_decay, show_default=True)
@click.option("--warmup-fraction", type=float, default=_OPT.warmup_fraction, show_default=True)
@click.option("--grad-clip", type=float, default=_OPT.grad_clip, show_default=True)
@click.option("--seed", type=int, default=_CFG.seed, show_default=True)
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto",
              show_default=True)
@click.option("--amp", type=click.Choice(["none", "bf16", "fp16"]), default=_CFG.amp,
              show_default=True)
@click.option("--workers", type=int, default=_CFG.workers, show_default=True,
              help="DataLoader workers (each opens its own HDF5 handles).")
@click.option("--in-memory/--no-in-memory", default=_CFG.in_memory, show_default=True,
              help="Hold all frames (and caches) in RAM.")
@click.option("--eval-split", default="val", show_default=True,
              help="Split for per-epoch validation and best-epoch selection ('' = none).")
@click.option("--eval-batch-size", type=int, default=_CFG.eval_batch_size, show_default=True)
@click.option("--log-every", type=int, default=_CFG.log_every, show_default=True)
@click.option("--gradient-checkpointing/--no-gradient-checkpointing",
              default=_CFG.gradient_checkpointing, show_default=True)
@click.option("--compile/--no-compile", "compile_step", default=_CFG.compile, show_default=True,
              help="torch.compile the training step (worth it on CUDA; first step compiles).")
@click.pass_context
def train(ctx: click.Context, **values: Any) -> None:
    """Train a student against zero or more teacher caches (resumes ``<out>.tmp``)."""
    apply_named_run(ctx, values["name"], values)
    config = StudentTrainConfig(
        clip=values["clip"],
        student=StudentConfig(temporal=values["temporal"], aggregation=values["aggregation"]),
        optim=OptimConfig(
            epochs=values["epochs"], batch_size=values["batch_size"], lr=values["lr"],
            coef_lr=values["coef_lr"], afa_lr_multiplier=values["afa_lr_multiplier"],
            weight_decay=values["weight_decay"], warmup_fraction=values["warmup_fraction"],
            grad_clip=values["grad_clip"],
        ),
        max_words=values["max_words"], coarse=values["coarse"], fine=values["fine"],
        beta=values["beta"], loss_weights=parse_loss_weights(values["loss_weights"]),
        seed=values["seed"], amp=values["amp"], workers=values["workers"],
        in_memory=values["in_memory"], eval_batch_size=values["eval_batch_size"],
        log_every=values["log_every"], gradient_checkpointing=values["gradient_checkpointing"],
        compile=values["compile_step"],
    )
    requested = values["device"]
    dist_info = init_distributed("cuda" if requested == "cuda" or (
        requested == "auto" and torch.cuda.is_available()) else "cpu")
    try:
        device = resolve_device(requested, dist_info.local_rank)
        manifest = Manifest.load(values["manifest_dir"])
        frames = FramesReader(values["frames_path"])
        with tqdm(desc="student", unit="step", disable=not dist_info.is_main) as bar:
            result = run_student(
                config=config, manifest=manifest, frames=frames,
                cache_paths=list(values["cache"]), out_dir=values["out"], device=device,
                dist_info=dist_info, eval_split=values["eval_split"], name=values["name"],
                on_progress=bar.update,
            )
    finally:
        cleanup()
    if dist_info.is_main:
        role = result.summary["role"]
        resumed = (f", resumed from epoch {result.resumed_from_epoch}"
                   if result.resumed_from_epoch else "")
        best = (f"best epoch {result.best_epoch}: {json.dumps(_short(result.best_metrics))}"
                if result.best_metrics else
                f"last epoch {result.best_epoch} kept (no validation split)")
        click.echo(f"wrote {result.out_dir} ({role}, {len(values['cache'])} teacher cache(s), "
                   f"{result.summary['train_captions']} train captions{resumed}); {best}")


def _short(metrics: dict[str, float]) -> dict[str, float]:
    return {k: round(v, 2) for k, v in metrics.items()
            if k in ("R1", "R5", "R10", "MedianR", "MeanR")}
