"""``teachclip teacher score``: score every train caption × video once into a teacher cache.

Option precedence: command line > ``teachers: {NAME: {score: {...}}}`` in params.yaml (with
``--name``) > the ``teacher: {score: {...}}`` section > built-in defaults. Under
``torchrun --nproc_per_node=N`` the caption rows are split across ranks into one cache.
"""

from __future__ import annotations

from typing import Any

import click
from tqdm import tqdm

from pipeline.cache.score_run import run_teacher_score
from pipeline.data.folds import fold_model_dirs
from pipeline.data.frames_store import FramesReader
from pipeline.data.manifest import Manifest
from pipeline.distributed import cleanup, init_distributed
from pipeline.models.teachers.base import DEFAULT_CHUNK_PAIRS
from stages.groups import teacher
from stages.options import (
    DEVICE_OPTION,
    amp_option,
    device_type,
    frames_option,
    manifest_option,
    resolve_device,
)
from stages.params import apply_entry, named_entry, paths_of, root_params


@teacher.command("score")
@click.option("--name", required=True, help="Teacher name; reads params teachers.NAME.score.")
@click.option("--model", default=None, type=click.Path(),
              help="Teacher model dir or .pt [default: paths.teachers/NAME/model].")
@frames_option(help="frames.h5 to score (the one the teacher and student train on).")
@manifest_option()
@click.option("--out", default=None, type=click.Path(file_okay=False),
              help="Output directory (cache.h5, metrics.json) [default: "
                   "paths.teachers/NAME/cache].")
@click.option("--split", default="train", show_default=True, help="Split to cache.")
@click.option("--metrics-split", default="test", show_default=True,
              help="Split for the teacher's own metrics ('' = skip).")
@click.option("--batch-size", type=int, default=64, show_default=True,
              help="Texts/videos per encoder batch.")
@click.option("--block-rows", type=int, default=None,
              help="Caption rows per resumable block [default: ~1024, whole chunks].")
@click.option("--chunk-pairs", type=int, default=DEFAULT_CHUNK_PAIRS, show_default=True,
              help="Pairs the head scores at once (memory vs speed).")
@click.option("--fold-model", "fold_models", multiple=True, type=click.Path(),
              help="Cross-fit the soft labels: the K fold teachers (`teacher train --folds K "
                   "--fold k`), in fold order; each caption is scored by the one that never "
                   "saw its video (repeat K times; metrics still from --model).")
@click.option("--cross-fit", type=int, default=None,
              help="Cross-fit with the K fold teachers `teacher train --cross-fit K` wrote into "
                   "MODEL/folds [default: teachers.NAME.cross_fit; 0 = off].")
@DEVICE_OPTION
@amp_option(help="Autocast for the encoders, bf16 or fp16 on a GPU (the head's softmaxes stay "
                 "float32); none = float32.")
@click.pass_context
def score(ctx: click.Context, **values: Any) -> None:
    """Score teacher NAME on every caption × video of --split into a cache (resumable)."""
    name = values["name"]
    entry = named_entry(ctx, "teachers", name).get("score") or {}
    apply_entry(ctx, dict(entry), values, f"teachers.{name}.score")
    teachers_dir = paths_of(root_params(ctx))["teachers"]
    model = values["model"] or f"{teachers_dir}/{name}/model"
    cross_fit = values["cross_fit"]
    if cross_fit is None:
        cross_fit = int(named_entry(ctx, "teachers", name).get("cross_fit") or 0)
    fold_models = tuple(values["fold_models"])
    if cross_fit and not fold_models:
        fold_models = tuple(str(d) for d in fold_model_dirs(model, cross_fit))
    out = values["out"] or f"{teachers_dir}/{name}/cache"
    dist_info = init_distributed(device_type(values["device"]))
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
                fold_models=fold_models,
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
                   f"{r.pairs_per_s:,.0f} pairs/s"
                   + (f"; cross-fitted by {len(fold_models)} fold teachers" if fold_models
                      else ""))
        if run.metrics is not None:
            m = run.metrics
            click.echo(f"teacher {m['split']} metrics: R@1 {m['R1']:.1f} R@5 {m['R5']:.1f} "
                       f"R@10 {m['R10']:.1f} MdR {m['MedianR']:g} MnR {m['MeanR']:.1f}")
