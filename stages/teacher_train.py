"""``teachclip teacher train``: fine-tune a teacher from CLIP (DDP under torchrun; resumable).

Option precedence: command line > ``teachers: {NAME: {...}}`` in params.yaml (with ``--name``) >
the ``teacher: {train: {...}}`` section > built-in defaults.
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
from pipeline.models.teachers import TEACHERS
from pipeline.train.setup import OptimConfig
from pipeline.train.teacher import TeacherTrainConfig
from pipeline.train.teacher_run import run_teacher_train
from stages.groups import teacher
from stages.options import device_type, resolve_device
from stages.params import apply_entry, named_entry

_CFG = TeacherTrainConfig()
_OPT = _CFG.optim
#: Keys of a ``teachers.NAME`` entry that belong to other commands or to dvc.yaml templating.
TEACHER_ENTRY_OTHER_KEYS = frozenset({"score", "import", "checkpoint", "source", "desc", "model",
                                      "out"})


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
    apply_entry(ctx, named_entry(ctx, "teachers", name), values, f"teachers.{name}",
                ignore=TEACHER_ENTRY_OTHER_KEYS)
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
    dist_info = init_distributed(device_type(values["device"]))
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
        chosen = (f"best epoch {s['best_epoch']}: {json.dumps(best)}" if best else
                  f"last epoch {s['best_epoch']} kept (no validation split)")
        click.echo(f"wrote {run.out_dir} ({config.kind}, {s['train_captions']} train captions, "
                   f"{s['steps']} steps{resumed}); {chosen}")
