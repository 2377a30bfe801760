"""``teachclip teacher train``: fine-tune a teacher from CLIP (DDP under torchrun; resumable).

Option precedence: command line > ``teachers: {NAME: {...}}`` in params.yaml (with ``--name``) >
the ``teacher: {train: {...}}`` section > built-in defaults.
"""

from __future__ import annotations

import json
from typing import Any

import click
from tqdm import tqdm

from pipeline.data.folds import check_fold
from pipeline.data.frames_store import FramesReader
from pipeline.data.manifest import Manifest
from pipeline.distributed import cleanup, init_distributed
from pipeline.errors import InputError
from pipeline.models.teachers import TEACHERS
from pipeline.train.teacher import TeacherTrainConfig
from pipeline.train.teacher_run import run_cross_fitted_teacher_train, run_teacher_train
from stages.groups import teacher
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
from stages.params import apply_entry, named_entry, paths_of, root_params

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


def resolve_kind(name: str, kind: str | None) -> str:
    """``--kind`` when given (or set in params), else the name when it is a teacher kind.

    Why not a fixed default: ``--name ts2net`` alone used to train X-CLIP under the name ts2net.
    """
    if kind:
        return kind
    if name in TEACHERS:
        return name
    raise InputError(f"teacher {name!r}: say which architecture to train with --kind "
                     f"{{{','.join(sorted(TEACHERS))}}} (or `kind:` in params teachers.{name}); "
                     "only a name that is itself a kind implies it")


@teacher.command("train")
@click.option("--name", required=True, help="Teacher name; reads params.yaml teachers.NAME.")
@click.option("--kind", type=click.Choice(sorted(TEACHERS)), default=None,
              help="Teacher architecture [default: NAME when NAME is a teacher kind, e.g. "
                   "--name ts2net trains TS2-Net; required for any other NAME].")
@click.option("--options", default=None,
              help="Teacher constructor options as JSON (params: a mapping).")
@frames_option()
@manifest_option()
@click.option("--clip", default=_CFG.clip, show_default=True,
              help="CLIP source: tiny[:json], a Hugging Face dir or an OpenAI .pt.")
@click.option("--out", default=None, type=click.Path(file_okay=False),
              help="Output directory [default: paths.teachers/NAME/model].")
@click.option("--max-words", type=int, default=_CFG.max_words, show_default=True,
              help="L: tokens per caption incl. start/end (longer captions are cut).")
@optim_options(_OPT, afa=False)
@click.option("--seed", type=int, default=_CFG.seed, show_default=True,
              help="Seeds weights of new layers, batch order and sampling (same seed = same run).")
@click.option("--cross-fit", type=int, default=0, show_default=True,
              help="Also train K >= 2 fold teachers into OUT/folds/k (each on the train videos "
                   "outside fold k), for `teacher score` to cross-fit the soft labels; 0 = off.")
@click.option("--folds", type=int, default=_CFG.folds, show_default=True,
              help="Cross-fitting: K >= 2 trains fold teacher --fold on the train videos "
                   "outside that fold (0 = the ordinary teacher).")
@click.option("--fold", type=int, default=_CFG.fold, show_default=True,
              help="Which of the --folds folds this teacher leaves out (0..K-1).")
@DEVICE_OPTION
@amp_option(default=_CFG.amp)
@click.option("--workers", type=int, default=_CFG.workers, show_default=True,
              help="DataLoader worker processes reading frames.h5 (0 = in the main process).")
@run_options(_CFG)
@click.pass_context
def train(ctx: click.Context, **values: Any) -> None:
    """Fine-tune teacher NAME from CLIP (rerun the same command to resume after a kill)."""
    name = values["name"]
    apply_entry(ctx, named_entry(ctx, "teachers", name), values, f"teachers.{name}",
                ignore=TEACHER_ENTRY_OTHER_KEYS)
    kind = resolve_kind(name, values["kind"])
    frames = FramesReader(values["frames_path"])
    config = TeacherTrainConfig(
        kind=kind, clip=values["clip"], options=_parse_options(values["options"]),
        optim=optim_from(values),
        max_words=values["max_words"], max_frames=int(frames.max_frames), seed=values["seed"],
        amp=values["amp"], workers=values["workers"],
        eval_batch_size=values["eval_batch_size"], log_every=values["log_every"],
        gradient_checkpointing=values["gradient_checkpointing"],
        folds=values["folds"], fold=values["fold"], patience=values["patience"],
    )
    check_patience(values)
    check_fold(config.folds, config.fold)
    check_fold(values["cross_fit"], 0)
    if values["cross_fit"] and config.folds:
        raise InputError("--cross-fit trains the fold teachers itself: drop --folds/--fold")
    out = values["out"] or f"{paths_of(root_params(ctx))['teachers']}/{name}/model"
    dist_info = init_distributed(device_type(values["device"]))
    try:
        device = resolve_device(values["device"], dist_info.local_rank)
        manifest = Manifest.load(values["manifest_dir"])
        with tqdm(desc=f"teacher {name}", unit="step", disable=not dist_info.is_main) as bar:
            if values["cross_fit"]:
                def on_fold(k: int) -> None:
                    bar.set_description(f"teacher {name} fold {k}/{values['cross_fit']}"
                                        if k < values["cross_fit"] else f"teacher {name}")

                run = run_cross_fitted_teacher_train(
                    config=config, cross_fit=values["cross_fit"], manifest=manifest,
                    frames=frames, out_dir=out, device=device, dist_info=dist_info,
                    eval_split=values["eval_split"], name=name, on_fold=on_fold,
                    on_progress=bar.update)
            else:
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
        chosen = (f"validation {json.dumps(best)}" if best else
                  f"last epoch {s['best_epoch']} kept (no validation split)")
        folds = (f" + {values['cross_fit']} fold teachers in {run.out_dir}/folds"
                 if values["cross_fit"] else "")
        click.echo(f"wrote {run.out_dir}{folds} ({config.kind}, {s['train_captions']} train "
                   f"captions, "
                   f"{s['steps']} steps{resumed}); {chosen}{plateau_note(s)}")
        echo_plateau_warning(s, f"teacher {name}")
