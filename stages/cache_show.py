"""``teachclip cache show CACHE CAPTION_ID``: one caption's teacher frame relevance, and a picture.

Prints the caption's video, the teacher's score and rank for it, and per frame the relevance R
(and, with ``--student``, that student's AFA weights). ``--sheet relevance.png`` draws R over the
video's frames read from ``--frames`` (the frames.h5 the cache was scored on).
"""

from __future__ import annotations

import json
from pathlib import Path

import click
import numpy as np

from pipeline.cache.reader import TeacherCache
from pipeline.cache.show import (
    CaptionRelevance,
    caption_relevance,
    student_frame_weights,
    video_frames,
)
from pipeline.data.frames_store import FramesReader
from pipeline.data.manifest import Manifest
from pipeline.errors import InputError
from pipeline.eval.model_eval import load_retrieval_model
from pipeline.eval.plots import pyplot, require_png
from pipeline.eval.sheets import relevance_sheet
from stages.groups import cache
from stages.options import DEVICE_OPTION, resolve_device


def _caption_text(manifest_dir: Path | None, caption_id: str) -> str | None:
    if manifest_dir is None:
        return None
    captions = Manifest.load(manifest_dir).captions
    match = captions[captions["caption_id"] == caption_id]
    return str(match["text"].iloc[0]) if len(match) else None


@cache.command("show")
@click.argument("path", type=click.Path(dir_okay=False, path_type=Path))
@click.argument("caption_id")
@click.option("--frames", "frames_path", default=None,
              type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="frames.h5 the cache was scored on (needed by --sheet and --student).")
@click.option("--manifest", "manifest_dir", default=None,
              type=click.Path(exists=True, file_okay=False, path_type=Path),
              help="Manifest directory, to print and draw the caption's text.")
@click.option("--student", "student_path", default=None, type=click.Path(exists=True),
              help="A student model (dir or model.pt) with AFA: show its frame weights beside R.")
@click.option("--sheet", default=None, type=click.Path(dir_okay=False),
              help="Draw R (and the student's weights) over the video's frames into this .png "
                   "(needs matplotlib and --frames).")
@click.option("--json", "as_json", is_flag=True, help="Print the numbers as JSON.")
@DEVICE_OPTION
def show_cmd(path: Path, caption_id: str, frames_path: Path | None, manifest_dir: Path | None,
             student_path: str | None, sheet: str | None, as_json: bool, device: str) -> None:
    """Show the teacher's frame relevance for CAPTION_ID from the cache PATH."""
    if (sheet is not None or student_path is not None) and frames_path is None:
        raise InputError("--sheet and --student need the video's frames: add --frames "
                         "FRAMES.h5 (the one the cache was scored on)")
    if sheet is not None:
        require_png(sheet, "--sheet")
        pyplot()
    teacher_cache = TeacherCache(path)
    info = caption_relevance(teacher_cache, caption_id)
    series = {f"teacher {info.teacher_kind} relevance R": info.relevance}
    frames = FramesReader(frames_path) if frames_path is not None else None
    pixels = mask = stamps = None
    if frames is not None:
        pixels, mask, stamps = video_frames(teacher_cache, frames, info.video_id)
    if student_path is not None:
        dev = resolve_device(device)
        loaded = load_retrieval_model(student_path, dev)
        series[f"student AFA weights ({Path(student_path).name})"] = student_frame_weights(
            loaded, frames, pixels, mask, dev)
    text = _caption_text(manifest_dir, caption_id)
    _print(info, series, stamps, text, as_json)
    if sheet is not None:
        quoted = f' "{text}"' if text else ""
        relevance_sheet(pixels, mask, series, sheet, timestamps=stamps,
                        title=f"{caption_id}{quoted} → video {info.video_id} (teacher score "
                              f"{info.own_score:+.2f}, rank {info.own_rank}/{info.n_videos})")
        click.echo(f"wrote {sheet}", err=as_json)


def _print(info: CaptionRelevance, series: dict[str, np.ndarray], stamps: np.ndarray | None,
           text: str | None, as_json: bool) -> None:
    """The numbers as a small table (or JSON): one line per frame."""
    if as_json:
        click.echo(json.dumps({
            "caption_id": info.caption_id, "video_id": info.video_id, "text": text,
            "teacher_kind": info.teacher_kind, "own_score": info.own_score,
            "own_rank": info.own_rank, "n_videos": info.n_videos,
            "mask": info.mask.astype(bool).tolist(),
            "series": {k: [round(float(x), 6) for x in v] for k, v in series.items()},
        }, indent=2))
        return
    click.echo(f"caption {info.caption_id} → video {info.video_id}"
               + (f': "{text}"' if text else ""))
    click.echo(f"teacher {info.teacher_kind}: score {info.own_score:+.3f} for its own video, "
               f"rank {info.own_rank} of {info.n_videos}")
    names = list(series)
    click.echo("frame  time     " + "  ".join(f"[{i + 1}]" for i in range(len(names))))
    for f in range(len(info.mask)):
        when = f"{stamps[f]:6.1f} s" if stamps is not None and np.isfinite(stamps[f]) else " " * 8
        cells = "  ".join(f"{series[n][f]:.3f}" for n in names) if info.mask[f] else "pad"
        click.echo(f"{f:5d}  {when} {cells}")
    for i, name in enumerate(names):
        click.echo(f"[{i + 1}] {name}")
