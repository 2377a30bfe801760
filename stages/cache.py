"""``teachclip cache info|verify``: inspect a teacher cache before sharing or training on it."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click
import h5py

from pipeline.cache.verify import info, verify
from pipeline.data.manifest import Manifest
from pipeline.errors import InputError
from stages.groups import cache


def _frames_digest(path: Path) -> str:
    """The ``content_digest`` attribute of a frames.h5 (read directly: no frames-store import)."""
    try:
        with h5py.File(path, "r") as handle:
            digest = handle.attrs.get("content_digest")
    except OSError as exc:
        raise InputError(f"cannot open frames file: {exc}", file=path) from exc
    if digest is None:
        raise InputError("frames file has no content_digest attribute", file=path)
    return digest.decode("utf-8") if isinstance(digest, bytes) else str(digest)


def _human(n_bytes: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n_bytes < 1024 or unit == "GiB":
            return f"{n_bytes:.1f} {unit}" if unit != "B" else f"{int(n_bytes)} B"
        n_bytes /= 1024
    return f"{n_bytes:.1f} TiB"  # pragma: no cover


@cache.command("info")
@click.argument("path", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
def info_cmd(path: Path, as_json: bool) -> None:
    """Show provenance, shapes and size of the teacher cache PATH."""
    summary = info(path)
    if as_json:
        click.echo(json.dumps(summary, indent=2, sort_keys=True))
        return
    prov = summary["provenance"]
    click.echo(f"{summary['path']}: {summary['schema']} v{summary['schema_version']} "
               f"({prov.get('layout', '?')})")
    click.echo(f"  teacher {prov.get('teacher_kind')!s}, checkpoint sha256 "
               f"{prov.get('checkpoint_sha256')!s}")
    click.echo(f"  {summary['n_captions']} captions × {summary['n_videos']} videos, "
               f"F={summary['max_frames']}, L={prov.get('max_words')}")
    click.echo(f"  blocks done {summary['blocks_done']}/{summary['n_blocks']}")
    click.echo(f"  frames digest {prov.get('frames_digest')}, manifest digest "
               f"{prov.get('manifest_digest')}")
    for name, ds in summary["datasets"].items():
        extra = " virtual" if ds["virtual"] else (f" chunks {ds['chunks']}" if ds["chunks"]
                                                   else "")
        click.echo(f"  {name}: {ds['dtype']} {ds['shape']}{extra}")
    if summary["virtual_sources"]:
        click.echo(f"  sources: {', '.join(summary['virtual_sources'])}")
    click.echo(f"  size {_human(summary['total_bytes'])} "
               f"({_human(summary['bytes_per_caption'])} per caption)")


@cache.command("verify")
@click.argument("path", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--frames", "frames_path", type=click.Path(exists=True, dir_okay=False,
              path_type=Path), default=None, help="frames.h5 the cache must have been scored on.")
@click.option("--manifest", "manifest_dir", type=click.Path(exists=True, file_okay=False,
              path_type=Path), default=None, help="Manifest directory the cache must match.")
@click.option("--checkpoint", "checkpoint_path", type=click.Path(exists=True, dir_okay=False,
              path_type=Path), default=None, help="Teacher checkpoint the cache must come from.")
def verify_cmd(path: Path, frames_path: Path | None, manifest_dir: Path | None,
               checkpoint_path: Path | None) -> None:
    """Re-check the teacher cache PATH: schema, shapes, NaN/inf, progress, digests.

    Exits with status 1 and lists every problem when anything is wrong.
    """
    frames_digest = _frames_digest(frames_path) if frames_path is not None else None
    manifest_digest = Manifest.load(manifest_dir).digest() if manifest_dir is not None else None
    problems = verify(path, frames_digest=frames_digest, manifest_digest=manifest_digest,
                      checkpoint_path=checkpoint_path)
    if problems:
        click.echo(f"Error: {path}: {len(problems)} problem(s):", err=True)
        for problem in problems:
            click.echo(f"  - {problem}", err=True)
        sys.exit(1)
    click.echo(f"{path}: OK")
