"""``teachclip cache info|verify``: inspect a teacher cache (and whether its soft labels carry
information) before sharing or training on it."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click
import h5py

from pipeline.cache.diagnostics import CacheDiagnostics, diagnose
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


def _diagnostic_lines(diag: CacheDiagnostics) -> list[str]:
    """Human-readable diagnostics lines (the numbers: :mod:`pipeline.cache.diagnostics`)."""
    scope = (f"all {diag.n_captions} captions" if diag.blocks_done == diag.n_blocks else
             f"the {diag.rows_done} captions of {diag.blocks_done}/{diag.n_blocks} finished "
             f"blocks (of {diag.n_captions})")
    lines = [f"  diagnostics over {scope}"
             + (f", {diag.rows_invalid} left out for NaN/inf or an empty frame mask"
                if diag.rows_invalid else "")]
    rel, rank = diag.relevance, diag.ranking
    skipped = (f"; {diag.rows_single_frame} single-frame caption(s) skipped"
               if diag.rows_single_frame else "")
    if rel is None:
        lines.append(f"  relevance: no caption with two or more valid frames{skipped}")
    else:
        lines.append(f"  relevance (T={diag.relevance_temperature:g}): normalised entropy mean "
                     f"{rel.entropy_mean:.3f}, median {rel.entropy_median:.3f}, p10 "
                     f"{rel.entropy_p10:.3f}, p90 {rel.entropy_p90:.3f}{skipped}")
        lines.append(f"  relevance top-frame mass {rel.top_frame_mass:.3f} vs uniform share "
                     f"{rel.uniform_share:.3f}")
    if rank is None:
        lines.append("  matrix: no finished caption to rank")
    else:
        lines.append(f"  matrix: positive R@1 {rank.r1:.1f} %, R@5 {rank.r5:.1f} %, median rank "
                     f"{rank.median_rank:g} (ties pessimistic), positive mass "
                     f"{rank.positive_mass:.3f}")
    return lines


def _print_summary(summary: dict) -> None:
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


@cache.command("info")
@click.argument("path", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
@click.option("--relevance-temperature", type=click.FloatRange(min=0, min_open=True),
              default=1.0, show_default=True,
              help="T of the diagnostics' frame relevance softmax(relevance / T); preview a "
                   "student's relevance temperature.")
@click.option("--no-diagnostics", is_flag=True,
              help="Skip the soft-label diagnostics (they read the whole file).")
def info_cmd(path: Path, as_json: bool, relevance_temperature: float,
             no_diagnostics: bool) -> None:
    """Show provenance, shapes and size of the teacher cache PATH, and whether its soft labels
    carry information: frame relevance entropy and the rank and softmax mass of each caption's
    own video (warnings go to stderr; the exit status stays 0)."""
    summary = info(path)
    diag = None if no_diagnostics else diagnose(path, relevance_temperature=relevance_temperature)
    if diag is not None:
        summary["diagnostics"] = diag.to_dict()
    if as_json:
        click.echo(json.dumps(summary, indent=2, sort_keys=True))
    else:
        _print_summary(summary)
        for line in _diagnostic_lines(diag) if diag is not None else []:
            click.echo(line)
    for warning in summary["diagnostics"]["warnings"] if diag is not None else []:
        click.echo(f"Warning: {path}: {warning}", err=True)


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
