"""``teachclip student train``: the CLIP4Clip+AFA student from cached teacher soft labels.

Option precedence: command line > ``students: {NAME: {...}}`` in params.yaml (with ``--name``) >
the ``student: {train: {...}}`` section > built-in defaults (method §4/§6).
"""

from __future__ import annotations

import json
from typing import Any

import click
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
from stages.optim_options import (
    check_patience,
    echo_plateau_warning,
    optim_from,
    optim_options,
    plateau_note,
    run_options,
)
from stages.options import (
    DEVICE_OPTION,
    amp_option,
    device_type,
    frames_option,
    manifest_option,
    resolve_device,
)
from stages.params import (
    apply_entry,
    named_entry,
    paths_of,
    root_params,
    teacher_cache_path,
)

_OPT = OptimConfig()
_CFG = StudentTrainConfig()
_ARCH = StudentConfig()


def apply_named_run(ctx: click.Context, name: str | None, values: dict[str, Any]) -> None:
    """Fill options not given on the command line from ``baselines.NAME`` or ``students.NAME``.

    A student's ``teachers: [a, b]`` become the caches those teachers' score stages publish
    (``paths.teachers/NAME/cache/cache.h5``), so no cache path is written twice.
    """
    params = root_params(ctx)
    in_tables = [t for t in ("baselines", "students") if name in (params.get(t) or {})]
    if name and len(in_tables) > 1:
        raise InputError(f"{name!r} is defined under both baselines and students: rename one")
    table = in_tables[0] if in_tables else "students"
    run = named_entry(ctx, table, name) if in_tables or not name else {}
    if name and not in_tables and (params.get("baselines") or params.get("students")):
        known = sorted({*(params.get("baselines") or {}), *(params.get("students") or {})})
        raise InputError(f"no baselines.{name} or students.{name} in params (known: {known})")
    teachers = run.pop("teachers", None)
    if teachers is not None:
        run["cache"] = tuple(teacher_cache_path(params, str(t)) for t in teachers)
    apply_entry(ctx, run, values, f"{table}.{name}")
    if values["out"] is None:
        if not name:
            raise click.UsageError("give --out (or --name with a params file)")
        values["out"] = f"{paths_of(params)['students']}/{name}"


def parse_loss_weights(text: str | None) -> tuple[float, float, float] | None:
    """``gt,coarse,fine`` → three floats (None: method §4 defaults for the coarse method)."""
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
@click.option("--out", default=None, type=click.Path(file_okay=False),
              help="Output directory (model.pt, logs, summary.json) "
                   "[default: paths.students/NAME].")
@click.option("--name", default=None,
              help="Run name; reads params baselines.NAME or students.NAME.")
@frames_option()
@manifest_option()
@click.option("--cache", multiple=True, type=click.Path(dir_okay=False),
              help="Teacher cache .h5 (repeat for several teachers; none = baseline).")
@click.option("--clip", default=_CFG.clip, show_default=True,
              help="CLIP source: tiny[:json], a Hugging Face dir or an OpenAI .pt.")
@click.option("--temporal", type=click.Choice(["seqTransf", "meanP"]), default=_ARCH.temporal,
              show_default=True,
              help="Frame features: seqTransf = temporal transformer over frames, meanP = none.")
@click.option("--aggregation", type=click.Choice(["afa", "mean"]), default=_ARCH.aggregation,
              show_default=True,
              help="Video vector: afa = attentional frame-feature aggregation, mean = average.")
@click.option("--max-words", type=int, default=_CFG.max_words, show_default=True,
              help="L: tokens per caption incl. start/end; must equal the caches' L.")
@click.option("--coarse", type=click.Choice(COARSE_METHODS), default=_CFG.coarse,
              show_default=True,
              help="Video-level distillation loss: pear (Pearson), ce (soft cross-entropy), l1.")
@click.option("--fine", type=click.Choice(FINE_METHODS), default=_CFG.fine, show_default=True,
              help="Frame-level loss between AFA weights and teacher relevance R.")
@click.option("--beta", type=float, default=_CFG.beta, show_default=True,
              help="Distillation temperature dividing student and teacher logits.")
@click.option("--relevance-temperature", type=float, default=_CFG.relevance_temperature,
              show_default=True,
              help="Divides the caches' frame relevance logits before the softmax of the fine "
                   "target (1 = official; < 1 sharpens a near-uniform relevance, see `teachclip "
                   "cache info`).")
@click.option("--label-smoothing", type=float, default=_CFG.label_smoothing, show_default=True,
              help="Label smoothing ε of the ground-truth InfoNCE (0 = official): soft targets "
                   "without a teacher, the control for distillation as regularisation.")
@click.option("--loss-weights", default=None,
              help="gt,coarse,fine weights (default: method §4 for the coarse method).")
@optim_options(_OPT, afa=True)
@click.option("--seed", type=int, default=_CFG.seed, show_default=True,
              help="Seeds weights of new layers, batch order and sampling (same seed = same run).")
@DEVICE_OPTION
@amp_option(default=_CFG.amp)
@click.option("--workers", type=int, default=_CFG.workers, show_default=True,
              help="DataLoader worker processes (each opens its own HDF5 handles; 0 = in the "
                   "main process).")
@click.option("--in-memory/--no-in-memory", default=_CFG.in_memory, show_default=True,
              help="Hold all frames (and caches) in RAM.")
@run_options(_CFG)
@click.option("--compile/--no-compile", "compile_step", default=_CFG.compile, show_default=True,
              help="torch.compile the training step (worth it on CUDA; first step compiles).")
@click.pass_context
def train(ctx: click.Context, **values: Any) -> None:
    """Train a student against zero or more teacher caches (resumes ``<out>.tmp``)."""
    apply_named_run(ctx, values["name"], values)
    config = StudentTrainConfig(
        clip=values["clip"],
        student=StudentConfig(temporal=values["temporal"], aggregation=values["aggregation"]),
        optim=optim_from(values),
        max_words=values["max_words"], coarse=values["coarse"], fine=values["fine"],
        beta=values["beta"], relevance_temperature=values["relevance_temperature"],
        loss_weights=parse_loss_weights(values["loss_weights"]),
        seed=values["seed"], amp=values["amp"], workers=values["workers"],
        in_memory=values["in_memory"], eval_batch_size=values["eval_batch_size"],
        log_every=values["log_every"], gradient_checkpointing=values["gradient_checkpointing"],
        compile=values["compile_step"], patience=values["patience"],
        label_smoothing=values["label_smoothing"],
    )
    check_patience(values)
    if not 0.0 <= values["label_smoothing"] < 1.0:
        raise InputError(f"--label-smoothing must be in [0, 1), got {values['label_smoothing']}")
    requested = values["device"]
    dist_info = init_distributed(device_type(requested))
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
        best = (f"validation {json.dumps(_short(result.best_metrics))}"
                if result.best_metrics else
                f"last epoch {result.best_epoch} kept (no validation split)")
        click.echo(f"wrote {result.out_dir} ({role}, {len(values['cache'])} teacher cache(s), "
                   f"{result.summary['train_captions']} train captions{resumed}); {best}"
                   f"{plateau_note(result.summary)}")
        echo_plateau_warning(result.summary, f"{role} {values['name'] or result.out_dir}")


def _short(metrics: dict[str, float]) -> dict[str, float]:
    return {k: round(v, 2) for k, v in metrics.items()
            if k in ("R1", "R5", "R10", "MedianR", "MeanR")}
