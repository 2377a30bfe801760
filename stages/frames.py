"""``teachclip frames``: decode every manifest video once into frames.h5 (resumable);
``teachclip frames verify PATH``: re-check a frames file from its data.

``frames`` stays a plain command (params files, dvc.yaml and help see just the stage) that hands
a first argument ``verify`` to the verify command (:class:`StageWithVerify`). Under
``torchrun --nproc_per_node=N`` (or several nodes) each rank decodes a share of the videos
into its own shard and rank 0 merges them into the same frames.h5 one process writes.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

import click
from tqdm import tqdm

from pipeline.data.frames_build import FramesConfig
from pipeline.data.frames_shards import build_frames_distributed, share_rows
from pipeline.data.frames_verify import verify_frames
from pipeline.data.manifest import SPLITS, Manifest
from pipeline.distributed import cleanup, init_distributed
from stages.groups import main
from stages.options import honor_sar_option, policy_option

_DEFAULTS = FramesConfig()


class StageWithVerify(click.Command):
    """A stage command that also answers ``<stage> verify ARGS``: the first argument ``verify``
    makes the context of :attr:`verify` instead, which the group then invokes."""

    verify: click.Command | None = None

    def make_context(self, info_name: str | None, args: list[str],
                     parent: click.Context | None = None, **extra: Any) -> click.Context:
        if self.verify is not None and args and args[0] == self.verify.name:
            return self.verify.make_context(f"{info_name} {self.verify.name}", args[1:],
                                            parent=parent, **extra)
        return super().make_context(info_name, args, parent=parent, **extra)


@main.command("frames", cls=StageWithVerify,
              epilog="`teachclip frames verify PATH` re-reads a finished frames.h5 through its "
                     "checksums and digests.")
@click.option("--manifest", "manifest_dir", type=click.Path(file_okay=False), required=True,
              help="Manifest directory (videos.csv, captions.csv).")
@click.option("--out", type=click.Path(dir_okay=False), required=True, help="frames.h5 path.")
@click.option("--splits", default=",".join(SPLITS), show_default=True,
              help="Comma-separated splits to decode.")
@click.option("--max-frames", type=int, default=_DEFAULTS.max_frames, show_default=True,
              help="F: frames kept per video.")
@click.option("--size", type=int, default=_DEFAULTS.size, show_default=True,
              help="Short side → size (bicubic), then centre crop size×size. Must equal the "
                   "CLIP's image size: 224 for ViT-B/32, 32 for --clip tiny (the embedded "
                   "default's params.yaml sets 32).")
@policy_option(_DEFAULTS.policy)
@honor_sar_option()
@click.option("--compression", default=_DEFAULTS.compression, show_default=True,
              help="none, lzf or gzip[:level] for the frames dataset.")
@click.option("--timeout", type=float, default=_DEFAULTS.timeout, show_default=True,
              help="Seconds per video before ffmpeg is killed and the video counted as failed.")
@click.option("--workers", type=int, default=2, show_default=True,
              help="Videos decoded in parallel (one ffmpeg process each; 1 = in this process).")
@click.option("--max-failed-fraction", type=click.FloatRange(0, 1), default=0.05,
              show_default=True, help="Fail the stage if more videos than this fail to decode.")
def frames(manifest_dir: str, out: str, splits: str, max_frames: int, size: int, policy: str,
           honor_sar: bool, compression: str, timeout: float, workers: int,
           max_failed_fraction: float) -> None:
    """Sample, resize and crop each video's frames once; failures are listed, not zero-filled."""
    manifest = Manifest.load(manifest_dir)
    chosen = [s.strip() for s in splits.split(",") if s.strip()]
    config = FramesConfig(policy=policy, max_frames=max_frames, size=size,
                          compression=compression, timeout=timeout, honor_sar=honor_sar)
    total = int(manifest.videos["split"].isin(chosen).sum())
    started = time.perf_counter()
    dist_info = init_distributed("cpu")
    try:
        share = len(share_rows(total, dist_info.rank, dist_info.world_size))
        with tqdm(total=share, desc="frames", unit="video", disable=not dist_info.is_main) as bar:
            report = build_frames_distributed(manifest, out, config, dist_info, splits=chosen,
                                              workers=workers,
                                              max_failed_fraction=max_failed_fraction,
                                              on_progress=bar.update)
    finally:
        cleanup()
    if report is None:  # not rank 0: rank 0 reports for everyone
        return
    elapsed = time.perf_counter() - started
    if report.discarded_tmp:
        click.echo(f"note: restarted {report.path}.tmp from scratch: the earlier one was "
                   f"{report.discarded_tmp}", err=True)
    for video_id, reason in report.failures:
        click.echo(f"failed: {video_id}: {reason}", err=True)
    click.echo(f"wrote {report.path}: {report.n_ok}/{report.n_videos} videos "
               f"({report.n_resumed} resumed, {report.n_decoded_now} decoded now, "
               f"{len(report.failures)} failed) in {elapsed:.1f} s"
               + (f" by {dist_info.world_size} ranks" if dist_info.enabled else "") + "; "
               f"content_digest {report.content_digest[:16]}")


@click.command("verify")
@click.argument("path", type=click.Path(dir_okay=False, path_type=Path))
def verify_cmd(path: Path) -> None:
    """Re-read every video of the frames file PATH through its checksums and digests.

    Exits with status 1 and lists every damaged video when anything is wrong.
    """
    with tqdm(desc="verify", unit="video") as bar:
        problems = verify_frames(path, on_progress=bar.update)
    if problems:
        click.echo(f"Error: {path}: {len(problems)} problem(s):", err=True)
        for problem in problems:
            click.echo(f"  - {problem}", err=True)
        sys.exit(1)
    click.echo(f"{path}: OK ({bar.n} videos re-read and matched their digests)")


frames.verify = verify_cmd
