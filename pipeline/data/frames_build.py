"""The frames stage: decode every manifest video once into ``frames.h5`` (resumable, atomic).

Decoding runs in a process pool (ffmpeg is single-threaded per video, so one process per core
scales); the main process is the only HDF5 writer and stores each result at the video's manifest
row as it arrives. A kill leaves ``<out>.tmp`` with every finished row flushed; the next run with
the same parameters and manifest continues from it. Videos that fail are listed with ffmpeg's
error and excluded; too many failures fail the stage and nothing appears under the real name.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from concurrent.futures import Future, ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.atomic import tmp_path_for
from pipeline.data.frames_store import FramesWriter
from pipeline.data.manifest import SPLITS, Manifest
from pipeline.data.sampling import POLICIES, POLICY_RULES, SampledVideo, sample_video
from pipeline.data.video import DecodeError, ffmpeg_version
from pipeline.errors import InputError

DECODER = "ffmpeg-python+imageio-ffmpeg"


@dataclass(frozen=True)
class FramesConfig:
    """What determines the content of frames.h5 (all of it is part of the resume key)."""

    policy: str = "official"
    max_frames: int = 12
    size: int = 224
    compression: str = "lzf"
    timeout: float = 300.0
    honor_sar: bool = False  # official: pixels treated as square (anamorphic video squashed)

    def validate(self) -> None:
        if self.policy not in POLICIES:
            raise InputError(f"unknown sampling policy {self.policy!r}; expected one of {POLICIES}")
        if self.max_frames < 1 or self.size < 1:
            raise InputError("max_frames and size must be >= 1")


@dataclass
class FramesReport:
    """Summary of one run, for the CLI to print."""

    path: Path
    n_videos: int
    n_ok: int
    n_resumed: int  # rows found done in a previous run's tmp file
    n_decoded_now: int  # decode attempts made by this run
    failures: list[tuple[str, str]] = field(default_factory=list)
    content_digest: str = ""
    discarded_tmp: str = ""  # why an earlier run's tmp file was restarted ("" = none was)


@dataclass(frozen=True)
class _Task:
    row: int
    video_id: str
    path: str
    start: float | None
    end: float | None


def frames_attrs(config: FramesConfig, manifest_digest: str,
                 splits: Sequence[str]) -> dict[str, Any]:
    """Provenance attrs of frames.h5 (no wall-clock time, no host names)."""
    return {
        "sampling_policy": config.policy,
        "sampling_fps": 0 if config.policy == "uniform" else 1,
        "sampling_rule": POLICY_RULES[config.policy],
        "max_frames": config.max_frames,
        "resolution": config.size,
        "resize": "short side to resolution, ffmpeg bicubic",
        "pixel_aspect": ("display (stretched by the sample aspect ratio first)"
                         if config.honor_sar else "stored (square pixels assumed, official)"),
        "crop": "center",
        "color": "rgb24",
        "decoder": DECODER,
        "ffmpeg_version": ffmpeg_version(),
        "manifest_digest": manifest_digest,
        "splits": ",".join(splits),
    }


def _optional(value: Any) -> float | None:
    return None if value is None or (isinstance(value, float) and np.isnan(value)) else float(value)


def _tasks(manifest: Manifest, splits: Sequence[str]) -> list[_Task]:
    for split in splits:
        if split not in SPLITS:
            raise InputError(f"unknown split {split!r}; expected some of {SPLITS}")
    videos = manifest.videos
    paths = manifest.resolved_paths()
    chosen = videos["split"].isin(list(splits)).to_numpy()
    tasks = []
    for i in np.flatnonzero(chosen):
        row = videos.iloc[i]
        tasks.append(_Task(row=len(tasks), video_id=str(row["video_id"]), path=str(paths[i]),
                           start=_optional(row["start"]), end=_optional(row["end"])))
    return tasks


def decode_task(task: _Task, config: FramesConfig) -> tuple[int, SampledVideo | None, str]:
    """Worker entry point: (row, frames or None, failure reason). Top level so it pickles."""
    try:
        sampled = sample_video(task.path, policy=config.policy, max_frames=config.max_frames,
                               size=config.size, start=task.start, end=task.end,
                               timeout=config.timeout, honor_sar=config.honor_sar)
    except DecodeError as exc:
        return task.row, None, f"{exc.reason}: {exc.stderr_tail}" if exc.stderr_tail else exc.reason
    except OSError as exc:
        return task.row, None, f"cannot read: {exc}"
    return task.row, sampled, ""


def _store(writer: FramesWriter, result: tuple[int, SampledVideo | None, str]) -> None:
    row, sampled, reason = result
    if sampled is None:
        writer.fail(row, reason)
    else:
        writer.write(row, sampled.frames, sampled.mask, sampled.n_decoded, sampled.timestamps)


def build_frames(
    manifest: Manifest,
    out: str | Path,
    config: FramesConfig,
    *,
    splits: Sequence[str] = SPLITS,
    workers: int = 2,
    max_failed_fraction: float = 0.05,
    on_progress: Callable[[int], None] | None = None,
) -> FramesReport:
    """Decode the chosen splits of ``manifest`` into ``out`` (frames.h5), resuming ``<out>.tmp``.

    ``workers <= 1`` decodes in the main process (tests count decode calls that way).
    ``on_progress(1)`` is called per finished video, including the already-done ones at start
    (as one call with their count) so a progress bar shows the true position.
    """
    config.validate()
    out = Path(out)
    tasks = _tasks(manifest, splits)
    if not tasks:
        raise InputError(f"no videos in splits {list(splits)}")
    attrs = frames_attrs(config, manifest.digest(), splits)
    writer = FramesWriter.open(tmp_path_for(out), [t.video_id for t in tasks],
                               max_frames=config.max_frames, size=config.size, attrs=attrs,
                               compression=config.compression)
    with writer:  # a failure keeps the tmp (and its progress) for the next run
        pending = writer.pending_rows()
        n_resumed = len(tasks) - len(pending)
        if on_progress is not None and n_resumed:
            on_progress(n_resumed)
        todo = [tasks[row] for row in pending]
        _run(todo, config, writer, workers, on_progress)
        failures = writer.failures()
        check_failure_gate(failures, len(tasks), max_failed_fraction, manifest.root)
        digest = writer.finalize(attrs, final=out)
    return FramesReport(path=out, n_videos=len(tasks), n_ok=len(tasks) - len(failures),
                        n_resumed=n_resumed, n_decoded_now=len(todo), failures=failures,
                        content_digest=digest, discarded_tmp=writer.discarded)


def _run(todo: list[_Task], config: FramesConfig, writer: FramesWriter, workers: int,
         on_progress: Callable[[int], None] | None) -> None:
    """Decode ``todo`` and store results as they arrive (single writer: this process)."""
    if workers <= 1:
        for task in todo:
            _store(writer, decode_task(task, config))
            if on_progress is not None:
                on_progress(1)
        return
    pool = ProcessPoolExecutor(max_workers=workers)
    try:
        futures: list[Future] = [pool.submit(decode_task, task, config) for task in todo]
        for future in as_completed(futures):
            _store(writer, future.result())
            if on_progress is not None:
                on_progress(1)
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def check_failure_gate(failures: Sequence[tuple[str, str]], n_videos: int,
                       max_failed_fraction: float, where: Any) -> None:
    """Refuse a frames file with more failed videos than ``max_failed_fraction`` allows.

    Shared by the one-process stage and the merge of torchrun shards, so both gate alike.
    """
    if len(failures) > max_failed_fraction * n_videos:
        shown = "; ".join(f"{vid}: {why}" for vid, why in failures[:3])
        raise InputError(
            f"{len(failures)} of {n_videos} videos failed to decode, more than "
            f"--max-failed-fraction {max_failed_fraction:g} allows (params: frames: "
            f"max_failed_fraction); first: {shown}. Fix or drop those videos, or "
            "raise --max-failed-fraction to accept them as missing",
            file=where,
        )
