"""Video decoding with ffmpeg-python and the imageio-ffmpeg binary (there is no ffprobe).

Why this module exists: every stage that touches pixels goes through these two functions, so the
unmaintained ``ffmpeg-python`` dependency stays swappable (PyAV, plain subprocess) in one place.
ffmpeg-python only *builds* the command line here (``.compile``); we run it with ``subprocess`` so
that each video gets a timeout (ffmpeg-python 0.2.0 ``run`` has none) and stderr is always
captured (the notes' pitfall: an uncaptured stderr turns every error into ``None``).

Resizing and cropping happen inside the ffmpeg filter graph (short side → ``size`` with bicubic,
then centre crop), so only the final small frames cross the pipe. Like the official loader, the
resize treats pixels as square by default, so a video with a non-square sample aspect ratio
(anamorphic DVD/TV footage) is squashed; ``honor_sar=True`` first stretches the stored frame to
its display shape (the longer way, never losing resolution). ffmpeg's bicubic is not PIL's
antialiased bicubic: pixels differ slightly from CLIP4Clip's loader, which is harmless as long as
teacher and student read the same cached frames.
"""

from __future__ import annotations

import functools
import re
import subprocess
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import ffmpeg
import numpy as np

from pipeline.errors import TeachclipError

STDERR_TAIL_CHARS = 800


class DecodeError(TeachclipError):
    """A video could not be probed or decoded; carries the tail of ffmpeg's stderr.

    Why the tail: the frames stage lists every failed video with a reason in ``frames.h5``, and the
    last lines of ffmpeg's log are what a user needs ("moov atom not found", "Invalid data ...").
    """

    def __init__(self, path: str | Path, reason: str, stderr: str = "") -> None:
        self.path = str(path)
        self.reason = reason
        self.stderr_tail = _tail(stderr)
        detail = f": {self.stderr_tail}" if self.stderr_tail else ""
        super().__init__(f"{self.path}: {reason}{detail}")


_ADDRESS_RE = re.compile(r" @ 0x[0-9a-fA-F]+")


def _tail(text: str, limit: int = STDERR_TAIL_CHARS) -> str:
    """Last lines of ffmpeg's log, without the ``[in#0 @ 0x55…]`` memory addresses: the reasons
    are stored in frames.h5, which must be the same bytes on every run (DVC hashes it)."""
    text = _ADDRESS_RE.sub("", text)
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    tail = " | ".join(lines[-4:])
    return tail[-limit:]


@functools.lru_cache(maxsize=1)
def ffmpeg_exe() -> str:
    """Path of the ffmpeg binary (imageio-ffmpeg's bundled one unless IMAGEIO_FFMPEG_EXE is set).

    Imported here, not at module level: training and evaluation never decode, and a machine
    holding only frames.h5 (a GPU box, say) need not carry the 30-70 MB ffmpeg wheel.
    """
    import imageio_ffmpeg

    return imageio_ffmpeg.get_ffmpeg_exe()


@functools.lru_cache(maxsize=1)
def ffmpeg_version() -> str:
    """Version string of that binary: recorded as provenance in frames.h5."""
    import imageio_ffmpeg

    return str(imageio_ffmpeg.get_ffmpeg_version())


@dataclass(frozen=True)
class VideoInfo:
    """What ``ffmpeg -i`` reports about the first video stream (any field may be unknown)."""

    duration: float | None
    fps: Fraction | None
    width: int | None
    height: int | None


_DURATION_RE = re.compile(r"Duration:\s*(\d+):(\d+):(\d+(?:\.\d+)?)")
_VIDEO_LINE_RE = re.compile(r"Stream #\S+.*?: Video: (.*)")
_FPS_RE = re.compile(r"([\d.]+)(k?) (?:fps|tbr)")
_SIZE_RE = re.compile(r"[ ,](\d{1,5})x(\d{1,5})[ ,\[]")


def _parse_fps(text: str) -> Fraction | None:
    match = _FPS_RE.search(text)
    if match is None:
        return None
    value = Fraction(match.group(1))
    if match.group(2) == "k":
        value *= 1000
    return value if value > 0 else None


def parse_probe(stderr: str) -> VideoInfo:
    """Parse the banner ``ffmpeg -i FILE`` prints: duration, fps, size of the first video stream.

    ffmpeg prints the frame rate rounded to ~4 significant digits ("29.97 fps"); that is enough
    for the official 1 fps stride ``k = int(fps)``.
    """
    duration = None
    match = _DURATION_RE.search(stderr)
    if match is not None:
        h, m, s = match.groups()
        duration = int(h) * 3600 + int(m) * 60 + float(s)
    fps = width = height = None
    line = _VIDEO_LINE_RE.search(stderr)
    if line is not None:
        text = line.group(1)
        fps = _parse_fps(text)
        size = _SIZE_RE.search(text + " ")
        if size is not None:
            width, height = int(size.group(1)), int(size.group(2))
    return VideoInfo(duration=duration, fps=fps, width=width, height=height)


def _check_file(path: Path) -> None:
    if not path.exists():
        raise DecodeError(path, "file not found")
    if not path.is_file():
        raise DecodeError(path, "not a regular file")
    if path.stat().st_size == 0:
        raise DecodeError(path, "empty file (0 bytes)")


def probe(path: str | Path, *, timeout: float = 60.0) -> VideoInfo:
    """Probe a video without ffprobe by parsing ``ffmpeg -i`` stderr (its non-zero exit is normal).

    Raises DecodeError if the file is missing/empty or ffmpeg finds no video stream.
    """
    path = Path(path)
    _check_file(path)
    try:
        proc = subprocess.run(
            [ffmpeg_exe(), "-hide_banner", "-nostdin", "-i", str(path)],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, timeout=timeout,
        )
    except subprocess.TimeoutExpired as exc:
        raise DecodeError(path, f"probe timed out after {timeout:g} s") from exc
    stderr = proc.stderr.decode("utf-8", "replace")
    if _VIDEO_LINE_RE.search(stderr) is None:
        raise DecodeError(path, "no video stream found", stderr)
    return parse_probe(stderr)


def display_shape(stream: ffmpeg.nodes.FilterableStream) -> ffmpeg.nodes.FilterableStream:
    """Stretch frames to their display aspect (sample aspect ratio ``sar`` → 1).

    SAR > 1 widens the frame, SAR < 1 heightens it, so no stored pixel is merged away; sizes are
    kept even for yuv420p. Without SAR information ffmpeg's ``sar`` is 1 and this is a no-op.
    """
    return stream.filter(
        "scale", "trunc(iw*max(sar,1)/2)*2", "trunc(ih*max(1/sar,1)/2)*2", flags="bicubic",
    ).filter("setsar", "1")


def decode_frames(
    path: str | Path,
    *,
    size: int | None = None,
    start: float | None = None,
    end: float | None = None,
    every_nth: int | None = None,
    first_frame: int | None = None,
    max_output_frames: int | None = None,
    width: int | None = None,
    height: int | None = None,
    threads: int = 1,
    timeout: float = 300.0,
    honor_sar: bool = False,
) -> np.ndarray:
    """Decode a video (or the clip ``[start, end)`` seconds) into uint8 RGB frames [n, H, W, 3].

    ``size``: resize the short side to ``size`` (bicubic) and centre-crop ``size × size``, inside
    the filter graph. ``size=None`` keeps the native resolution (``width``/``height`` are then
    taken from a probe unless given). ``every_nth=k`` keeps decoded frames 0, k, 2k, … of the clip
    via ``framestep`` + ``-fps_mode passthrough``, so dropped frames are never converted or scaled
    (the official 1 fps policy). ``start``/``end`` go before ``-i`` (keyframe seek, then exact).
    ``first_frame=a`` instead starts at frame number ``a`` of the file, counted by decoding from
    its first frame (``trim=start_frame``): exact whatever the stream's timestamps or a rounded
    frame rate, which is how the official loader addresses frames. ``max_output_frames=n`` stops
    ffmpeg after n output frames (``-frames:v``), so a clip's tail is never decoded.
    ``honor_sar`` (with ``size``): scale by the sample aspect ratio before the resize and crop.
    """
    path = Path(path)
    _check_file(path)
    if first_frame is not None and (start is not None or end is not None):
        raise ValueError("first_frame counts from the file's first frame: no start/end with it")
    stream = ffmpeg.input(str(path), **_seek_options(path, start, end)).video
    stream, output_opts = _frame_selection(stream, every_nth, first_frame, max_output_frames)
    if size is not None:
        if honor_sar:
            stream = display_shape(stream)
        stream = stream.filter(
            "scale", size, size, force_original_aspect_ratio="increase", flags="bicubic"
        ).filter("crop", size, size)
        out_w = out_h = size
    else:
        if width is None or height is None:
            info = probe(path, timeout=timeout)
            if info.width is None or info.height is None:
                raise DecodeError(path, "could not determine frame size")
            width, height = info.width, info.height
        out_w, out_h = width, height
    argv = (
        stream.output("pipe:", format="rawvideo", pix_fmt="rgb24", threads=threads, **output_opts)
        .global_args("-hide_banner", "-nostdin", "-loglevel", "error")
        .compile(cmd=ffmpeg_exe())
    )
    return _run_raw(argv, path, out_w, out_h, timeout)


def _seek_options(path: Path, start: float | None, end: float | None) -> dict[str, object]:
    """``-ss``/``-t`` input options for the clip ``[start, end)`` seconds (none: whole file)."""
    input_opts: dict[str, object] = {}
    if start is not None and start > 0:
        input_opts["ss"] = f"{start:.6f}"
    if end is not None:
        begin = start if start is not None and start > 0 else 0.0
        if end <= begin:
            raise DecodeError(path, f"empty clip: end {end} <= start {begin}")
        input_opts["t"] = f"{end - begin:.6f}"
    return input_opts


def _frame_selection(
    stream: ffmpeg.nodes.FilterableStream,
    every_nth: int | None,
    first_frame: int | None,
    max_output_frames: int | None,
) -> tuple[ffmpeg.nodes.FilterableStream, dict[str, object]]:
    """Filters and output options that pick frames before any conversion or scaling."""
    output_opts: dict[str, object] = {}
    if first_frame is not None and first_frame > 0:
        # trim keeps the frames' timestamps: passthrough stops the rawvideo muxer from filling the
        # gap before the first kept frame with duplicates.
        stream = stream.filter("trim", start_frame=int(first_frame))
        output_opts["fps_mode"] = "passthrough"
    if every_nth is not None and every_nth > 1:
        # framestep keeps frames 0, k, 2k, … == select='not(mod(n\,k))' (ffmpeg-python would
        # double the backslash that select's comma needs inside a filter graph).
        stream = stream.filter("framestep", step=int(every_nth))
        output_opts["fps_mode"] = "passthrough"
    if max_output_frames is not None:
        if max_output_frames < 1:
            raise ValueError(f"max_output_frames must be >= 1, got {max_output_frames}")
        output_opts["frames:v"] = int(max_output_frames)
    return stream, output_opts


def _run_raw(argv: list[str], path: Path, out_w: int, out_h: int, timeout: float) -> np.ndarray:
    """Run an ffmpeg command that writes rgb24 frames to stdout; frames [n, H, W, 3]."""
    try:
        proc = subprocess.run(argv, capture_output=True, timeout=timeout)
    except subprocess.TimeoutExpired as exc:
        raise DecodeError(path, f"decode timed out after {timeout:g} s") from exc
    stderr = proc.stderr.decode("utf-8", "replace")
    if proc.returncode != 0:
        raise DecodeError(path, f"ffmpeg exited with status {proc.returncode}", stderr)
    frame_bytes = out_w * out_h * 3
    data = proc.stdout
    if len(data) % frame_bytes:
        raise DecodeError(path, f"truncated output: {len(data)} bytes is not a whole frame count",
                          stderr)
    if not data:
        raise DecodeError(path, "no frames decoded", stderr)
    return np.frombuffer(data, np.uint8).reshape(-1, out_h, out_w, 3)
