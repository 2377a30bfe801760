"""``teachclip teacher train|import|score``: make a teacher, then cache its soft labels once.

Option precedence for ``train`` and ``score``: command line > ``teachers: {NAME: {...}}`` in
params.yaml (with ``--name``; ``score`` reads the ``score:`` sub-mapping of that entry) > the
``teacher: {train|score: {...}}`` section > built-in defaults. Under
``torchrun --nproc_per_node=N`` training is DDP and scoring splits the caption rows across ranks.
"""

from __future__ import annotations

import json
from typing import Any

import click
import torch
from click.core import ParameterSource
from tqdm import tqdm

from pipeline.cache.score_run import run_teacher_score
from pipeline.data.frames_store import FramesReader
from pipeline.data.manifest import Manifest
from pipeline.distributed import cleanup, init_distributed
from pipeline.errors import InputError
from pipeline.models.imports import import_teacher
from pipeline.models.teachers import TEACHERS
from pipeline.models.teachers.base import DEFAULT_CHUNK_PAIRS
from pipeline.train.setup import OptimConfig
from pipeline.train.teacher import TeacherTrainConfig
from pipeline.train.teacher_run import run_teacher_train
from stages.groups import teacher
from stages.options import resolve_device

_CFG = TeacherTrainConfig()
_OPT = _CFG.optim
#: Keys of a ``teachers.NAME`` entry that belong to other commands or to dvc.yaml templating.
_OTHER_KEYS = frozenset({"score", "import", "checkpoint", "source", "desc", "model", "out"})


def _device_type(choice: str) -> str:
    return "cuda" if choice == "cuda" or (choice == "auto" and torch.cuda.is_available()) else "cpu"


def teacher_entry(ctx: click.Context, name: str | None) -> dict[str, Any]:
    """``params['teachers'][name]`` (empty without ``--params`` or ``--name``)."""
    if not name:
        return {}
    root = ctx.find_root().obj or {}
    teachers = (root.get("params") or {}).get("teachers") or {}
    if name not in teachers:
        if teachers:
            raise InputError(f"no teachers.{name} in params (known: {sorted(teachers)})")
        return {}
    return dict(teachers[name] or {})


def apply_entry(ctx: click.Context, entry: dict[str, Any], values: dict[str, Any],
                where: str) -> None:
    """Fill options not given on the command line from ``entry``; unknown keys are errors."""
    unknown = sorted(set(entry) - set(values) - _OTHER_KEYS)
    if unknown:
        raise InputError(f"{where}: unknown option(s) {unknown}")
    for key, value in entry.items():
        if key in values and ctx.get_parameter_source(key) != ParameterSource.COMMANDLINE:
            values[key] = value


def _parse_options(value: Any) -> dict[str, Any]:
    """Teacher constructor options: a mapping (params.yaml) or a JSON object (command line)."""
    if value is None or value == "":
        return {}
    if isinstance(value, dict):
        return dict(value)
    try:
        parsed = json.loads(value)
    except json.JSONDecodeError as exc:
        raise InputError(f"--options must be a JSON object: {exc}") from None
    if not isinstance(parsed, dict):
        raise InputError(f"--options must be a JSON object, got {value!r}")
    return parsed


# ---------------------------------------------------------------------------------- train
@teacher.command("train")
@click.option("--name", required=True, help="Teacher name; reads params.yaml teachers.NAME.")
@click.option("--kind", type=click.Choice(sorted(TEACHERS)), default=_CFG.kind, show_default=True)
@click.option("--options", default=None,
              help="Teacher constructor options as JSON (params: a mapping).")
@click.option("--frames", "frames_path", required=True, type=click.Path(dir_okay=False))
@click.option("--manifest", "manifest_dir", required=True, type=click.Path(file_okay=False))
@click.option("--clip", default=_CFG.clip, show_default=True,
              help="CLIP source: tiny[:json], a Hugging Face dir or an OpenAI .pt.")
@click.option("--out", default=None, type=click.Path(file_okay=False),
              help="Output directory [default: data/teachers/NAME/model].")
@click.option("--max-words", type=int, default=_CFG.max_words, show_default=True)
@click.option("--epochs", type=int, default=_OPT.epochs, show_default=True)
@click.option("--batch-size", type=int, default=_OPT.batch_size, show_default=True,
              help="Global batch (split over torchrun processes).")
@click.option("--lr", type=float, default=_OPT.lr, show_default=True)
@click.option("--coef-lr", type=float, default=_OPT.coef_lr, show_default=True,
              help="CLIP lr = lr × coef-lr.")
@click.option("--weight-decay", type=float, default=_OPT.weight_decay, show_default=True)
@click.option("--warmup-fraction", type=float, default=_OPT.warmup_fraction, show_default=True)
@click.option("--grad-clip", type=float, default=_OPT.grad_clip, show_default=True)
@click.option("--seed", type=int, default=_CFG.seed, show_default=True)
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto",
              show_default=True)
@click.option("--amp", type=click.Choice(["none", "bf16", "fp16"]), default=_CFG.amp,
              show_default=True)
@click.option("--workers", type=int, default=_CFG.workers, show_default=True)
@click.option("--eval-split", default="val", show_default=True,
              help="Split for per-epoch validation and best-epoch selection ('' = none).")
@click.option("--eval-batch-size", type=int, default=_CFG.eval_batch_size, show_default=True)
@click.option("--log-every", type=int, default=_CFG.log_every, show_default=True)
@click.option("--gradient-checkpointing/--no-gradient-checkpointing",
              default=_CFG.gradient_checkpointing, show_default=True)
@click.pass_context
def train(ctx: click.Context, **values: Any) -> None:
    """Fine-tune teacher NAME from CLIP (rerun the same command to resume after a kill)."""
    name = values["name"]
    apply_entry(ctx, teacher_entry(ctx, name), values, f"teachers.{name}")
    frames = FramesReader(values["frames_path"])
    config = TeacherTrainConfig(
        kind=values["kind"], clip=values["clip"], options=_parse_options(values["options"]),
        optim=OptimConfig(
            epochs=values["epochs"], batch_size=values["batch_size"], lr=values["lr"],
            coef_lr=values["coef_lr"], afa_lr_multiplier=1.0,
            weight_decay=values["weight_decay"], warmup_fraction=values["warmup_fraction"],
            grad_clip=values["grad_clip"],
        ),
        max_words=values["max_words"], max_frames=int(frames.max_frames), seed=values["seed"],
        amp=values["amp"], workers=values["workers"],
        eval_batch_size=values["eval_batch_size"], log_every=values["log_every"],
        gradient_checkpointing=values["gradient_checkpointing"],
    )
    out = values["out"] or f"data/teachers/{name}/model"
    dist_info = init_distributed(_device_type(values["device"]))
    try:
        device = resolve_device(values["device"], dist_info.local_rank)
        manifest = Manifest.load(values["manifest_dir"])
        with tqdm(desc=f"teacher {name}", unit="step", disable=not dist_info.is_main) as bar:
            run = run_teacher_train(
                config=config, manifest=manifest, frames=frames, out_dir=out, device=device,
                dist_info=dist_info, eval_split=values["eval_split"], name=name,
                on_progress=bar.update,
            )
    finally:
        cleanup()
    if dist_info.is_main:
        s = run.summary
        resumed = (f", resumed from epoch {s['resumed_from_epoch']}"
                   if s["resumed_from_epoch"] else "")
        best = {k: round(v, 2) for k, v in s["best_metrics"].items()
                if k in ("R1", "R5", "R10", "MedianR", "MeanR")}
        click.echo(f"wrote {run.out_dir} ({config.kind}, {s['train_captions']} train captions, "
                   f"{s['steps']} steps{resumed}); best epoch {s['best_epoch']}: "
                   f"{json.dumps(best)}")


# ---------------------------------------------------------------------------------- import
@teacher.command("import")
@click.argument("kind", type=click.Choice(sorted(TEACHERS)))
@click.argument("checkpoint", type=click.Path(exists=True, dir_okay=False))
@click.option("--out", required=True, type=click.Path(file_okay=False),
              help="Output directory (model.pt, summary.json).")
@click.option("--clip", "clip_source", default=None,
              help="CLIP source, used only when the checkpoint carries no clip.* weights.")
@click.option("--max-words", type=int, default=None,
              help="Expected L (read from the checkpoint; a different value is an error).")
@click.option("--max-frames", type=int, default=None,
              help="Expected F (read from the checkpoint; a different value is an error).")
@click.option("--official-masking/--no-official-masking", default=True, show_default=True,
              help="Score exactly like the released code (padding takes part).")
@click.option("--name", default=None, help="Teacher name recorded in the summary.")
def import_cmd(kind: str, checkpoint: str, out: str, clip_source: str | None,
               max_words: int | None, max_frames: int | None, official_masking: bool,
               name: str | None) -> None:
    """Convert a released official KIND CHECKPOINT into our model format."""
    summary = import_teacher(kind, checkpoint, out, clip_source=clip_source,
                             max_words=max_words, max_frames=max_frames, name=name,
                             official_masking=official_masking)
    click.echo(f"wrote {out} ({kind}, L={summary['max_words']}, F={summary['max_frames']}, "
               f"official_masking={summary['official_masking']}); source sha256 "
               f"{summary['source_sha256']}")


# ---------------------------------------------------------------------------------- score
@teacher.command("score")
@click.option("--name", required=True, help="Teacher name; reads params teachers.NAME.score.")
@click.option("--model", default=None, type=click.Path(),
              help="Teacher model dir or .pt [default: data/teachers/NAME/model].")
@click.option("--frames", "frames_path", required=True, type=click.Path(dir_okay=False))
@click.option("--manifest", "manifest_dir", required=True, type=click.Path(file_okay=False))
@click.option("--out", default=None, type=click.Path(file_okay=False),
              help="Output directory (cache.h5, metrics.json) [default: "
                   "data/teachers/NAME/cache].")
@click.option("--split", default="train", show_default=True, help="Split to cache.")
@click.option("--metrics-split", default="test", show_default=True,
              help="Split for the teacher's own metrics ('' = skip).")
@click.option("--batch-size", type=int, default=64, show_default=True,
              help="Texts/videos per encoder batch.")
@click.option("--block-rows", type=int, default=None,
              help="Caption rows per resumable block [default: ~1024, whole chunks].")
@click.option("--chunk-pairs", type=int, default=DEFAULT_CHUNK_PAIRS, show_default=True,
              help="Pairs the head scores at once (memory vs speed).")
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto",
              show_default=True)
@click.option("--amp", type=click.Choice(["none", "bf16", "fp16"]), default="none",
              show_default=True, help="Autocast for the encoders (the head stays float32).")
@click.pass_context
def score(ctx: click.Context, **values: Any) -> None:
    """Score teacher NAME on every caption × video of --split into a cache (resumable)."""
    name = values["name"]
    entry = teacher_entry(ctx, name).get("score") or {}
    apply_entry(ctx, dict(entry), values, f"teachers.{name}.score")
    model = values["model"] or f"data/teachers/{name}/model"
    out = values["out"] or f"data/teachers/{name}/cache"
    dist_info = init_distributed(_device_type(values["device"]))
    try:
        device = resolve_device(values["device"], dist_info.local_rank)
        manifest = Manifest.load(values["manifest_dir"])
        frames = FramesReader(values["frames_path"])
        with tqdm(desc=f"score {name}", unit="caption", disable=not dist_info.is_main) as bar:
            def start(total: int) -> None:
                bar.reset(total=total)

            run = run_teacher_score(
                model=model, manifest=manifest, frames=frames, out_dir=out, device=device,
                dist_info=dist_info, name=name, split=values["split"],
                metrics_split=values["metrics_split"], batch_size=values["batch_size"],
                block_rows=values["block_rows"], chunk_pairs=values["chunk_pairs"],
                amp=values["amp"], on_start=start, on_progress=bar.update,
            )
    finally:
        cleanup()
    if dist_info.is_main:
        r = run.result
        done = (f"{r.blocks_computed}/{r.blocks_total} blocks computed here"
                + (f" × {dist_info.world_size} ranks" if dist_info.world_size > 1 else ""))
        click.echo(f"wrote {run.out_dir}: {r.n_captions} captions × {r.n_videos} videos, "
                   f"{run.cache_bytes / 2**20:.1f} MiB "
                   f"({run.cache_bytes / max(1, r.n_captions):.0f} B/caption); {done}, "
                   f"{r.pairs_per_s:,.0f} pairs/s")
        if run.metrics is not None:
            m = run.metrics
            click.echo(f"teacher {m['split']} metrics: R@1 {m['R1']:.1f} R@5 {m['R5']:.1f} "
                       f"R@10 {m['R10']:.1f} MdR {m['MedianR']:g} MnR {m['MeanR']:.1f}")
