"""``teachclip data import FORMAT ROOT --out DIR``: any supported annotation format -> manifest.

Thin: parse options, pass only the options the chosen format accepts (an option that does not
apply is a usage error rather than silently ignored), write through ``save_import``, print a
summary. Nothing is written when the import fails.
"""

from __future__ import annotations

import inspect
from collections import Counter
from pathlib import Path
from typing import Any

import click

from pipeline.data.importers import IMPORTERS, save_import
from pipeline.data.importers.common import SKIPPED_FILE
from stages.groups import data

# click option name -> importer keyword (only passed when given).
FORMAT_OPTIONS = {
    "annotations": "--annotations",
    "data_json": "--data-json",
    "train_csv": "--train-csv",
    "val_csv": "--val-csv",
    "test_csv": "--test-csv",
    "val_fraction": "--val-fraction",
    "captions_pkl": "--captions-pkl",
    "sets": "--set",
}


@data.command("import")
@click.argument("fmt", metavar="FORMAT", type=click.Choice(sorted(IMPORTERS)))
@click.argument("root", type=click.Path(exists=True, path_type=Path))
@click.option("--out", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="Output directory for videos.csv, captions.csv (and skipped.csv).")
@click.option("--video-dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Directory of video files (default ROOT/VideoData; csv/jsonl: the file's dir).")
@click.option("--skip-bad", is_flag=True,
              help="Skip bad items instead of failing; list them in OUT/skipped.csv.")
@click.option("--absolute-paths", is_flag=True,
              help="Store absolute video paths (default: relative to OUT).")
@click.option("--annotations", type=click.Path(path_type=Path), default=None,
              help="Annotation dir (default ROOT/Annotations if present, else ROOT).")
@click.option("--data-json", default=None, help="msrvtt/vatex: captions JSON file name.")
@click.option("--train-csv", default=None, help="msrvtt/vatex: train CSV (msrvtt: 9k or 7k).")
@click.option("--val-csv", default=None, help="msrvtt/vatex: val CSV ('' for none).")
@click.option("--test-csv", default=None, help="msrvtt/vatex: test CSV.")
@click.option("--val-fraction", type=float, default=None,
              help="msrvtt/vatex/activitynet: share of train held out as val when no val file "
                   "(default 0.05; 0 = official train set).")
@click.option("--captions-pkl", default=None, help="msvd: captions pickle file name.")
@click.option("--set", "sets", nargs=4, multiple=True,
              metavar="SPLIT VIDEOSET QUERYSET GT",
              help="teachclip-txt: one split from VideoSet/QuerySet/Annotations names; repeatable.")
def import_cmd(fmt: str, root: Path, out: Path, video_dir: Path | None, skip_bad: bool,
               absolute_paths: bool, **options: Any) -> None:
    """Import dataset FORMAT found at ROOT (a directory; csv/jsonl: the file) into a manifest."""
    importer = IMPORTERS[fmt]
    accepted = inspect.signature(importer).parameters
    kwargs: dict[str, Any] = {}
    for name, value in options.items():
        if value is None or value == ():
            continue
        if name not in accepted:
            raise click.UsageError(f"{FORMAT_OPTIONS[name]} does not apply to format {fmt!r}")
        kwargs[name] = value
    result = importer(root, video_dir=video_dir, skip_bad=skip_bad, **kwargs)
    manifest = save_import(result, out, absolute_paths=absolute_paths, write_skipped=skip_bad)
    per_split = manifest.videos["split"].value_counts()
    splits = ", ".join(f"{s} {int(per_split.get(s, 0))}" for s in ("train", "val", "test"))
    click.echo(f"imported {fmt}: {len(manifest.videos)} videos ({splits}), "
               f"{len(manifest.captions)} captions -> {out}")
    if skip_bad:
        click.echo(f"skipped {len(result.skipped)} items (listed in {out / SKIPPED_FILE})")
        for reason, count in Counter(r.reason for r in result.skipped).most_common():
            click.echo(f"  {count:6d}  {reason}")
