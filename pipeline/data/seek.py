"""Frame-exact seeking for the official policy: decode from the keyframe before each needed frame.

Why: the official policy addresses frames by their number from the file's first frame, which the
plain path (:func:`pipeline.data.video.decode_frames` with ``first_frame``) gets right by decoding
every frame of the video. On a 120 s 720p H.264 that is 3,000 decodes for 12 kept frames, and
decoding is nearly all of the frames stage's time (``bench/frames.py --peers``: PyAV and decord
seek instead). Here a demux-only pass (ffmpeg stream copy into the ``framecrc`` muxer: no
decoding, ~0.1 s for a 35 MB file) lists every packet's pts and keyframe flag; frame number
``n`` is the packet with the n-th smallest pts; the needed frames are grouped by the last
keyframe at or before each. One ffmpeg process has one input per group, each with ``-copyts
-seek_timestamp 1 -noaccurate_seek -ss T`` aimed so the demuxer lands on that keyframe
(:func:`_seek_time`), ``select`` keeps the group's frames by their pts, ``trim`` ends the input
after the last one, the plain path's scale/crop filters follow, and ``concat`` joins the groups.

Exactness: the frames are byte-identical to the plain path's (``tests/test_frames_seek.py``:
H.264 with and without B-frames, HEVC, VP9, MPEG-4, MP4 and MKV, 8/25/29.97 fps, a start-time
offset, clips with start/end, SAR, and the official loader's frame numbers). Selecting by pts
finds each frame wherever the demuxer lands, as long as that is at or before the group's
keyframe (landing later loses a frame, which the frame count catches). Frames decoded from a
keyframe equal those decoded from the file's start when the keyframe is an H.264 IDR (checked
with the ``filter_units`` bitstream filter, :func:`keyframes_safe`: H.264 flags open-GOP I frames
as keyframes too) or, for HEVC/VP9/MPEG-4, because no frame shown after a keyframe refers to one
before it. :func:`seek_frames` returns None (the caller then decodes every frame) whenever an
assumption could fail: another codec or demuxer (MPEG-TS seeks to the next keyframe), a packet
without pts or flagged corrupt or discard (edit lists that cut frames), duplicate pts, a stream
not starting with a keyframe, a non-IDR H.264 keyframe, a clip past the end, too little to gain
(:func:`worth_indexing` before the demux pass, :func:`worth_seeking` after it), or a frame count
that differs from the plan.
"""

from __future__ import annotations

import re
import subprocess
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import ffmpeg
import numpy as np

from pipeline.data.video import display_shape, ffmpeg_exe

#: Codecs whose keyframes are safe seek points (H.264 only after the IDR check).
SEEK_CODECS = ("h264", "hevc", "vp9", "mpeg4")
#: Demuxers that seek by an index to the keyframe at or before a time (mpegts seeks to the next
#: keyframe after a byte position, which would cost a failed try per video).
SEEK_FORMATS = ("mov", "matroska")
#: Use seeking only if it decodes at most this fraction of what the plain path decodes.
MAX_COST_RATIO = 0.75
#: Frames' worth of decoding charged per extra input (open, seek, decoder start).
INPUT_OVERHEAD_FRAMES = 8
INPUT_OVERHEAD_PIXELS = 1_500_000
#: Below this estimated plain decode time (ms), do not even index the packets.
MIN_PLAIN_MS = 150.0
_KEY, _CORRUPT, _DISCARD = 0x1, 0x2, 0x4
_NOPTS = -(2**63)
_INPUT_RE = re.compile(r"Input #0, ([^,]+)")


@dataclass(frozen=True)
class PacketIndex:
    """What a demux-only pass says about a video stream, in presentation order."""

    codec: str
    time_base: Fraction
    pts: np.ndarray  # int64 [N]: pts of frame n (sorted, unique)
    seek_frames: np.ndarray  # int64: frame numbers of the keyframes (all safe; sorted)
    pixels: int  # width × height (for the cost model)


@dataclass(frozen=True)
class _Group:
    """Needed frames decoded from one seek point (``key`` = frame number of that keyframe)."""

    key: int
    frames: tuple[int, ...]


def _framecrc(path: Path, timeout: float, bsf: str | None = None
              ) -> tuple[dict[str, str], list[tuple[int, int]]] | None:
    """(header fields, [(pts, flags)] in decode order) of the first video stream, or None.

    The header has framecrc's ``#`` lines plus ``format`` (the demuxer, from ffmpeg's banner).
    """
    # -copyts: the stream's own pts (what -seek_timestamp seeks to), not shifted to start at 0.
    argv = [ffmpeg_exe(), "-hide_banner", "-nostdin", "-nostats", "-loglevel", "info",
            "-copyts", "-i", str(path), "-map", "0:v:0", "-c", "copy"]
    if bsf:
        argv += ["-bsf:v", bsf]
    try:
        proc = subprocess.run([*argv, "-f", "framecrc", "-"], capture_output=True,
                              timeout=timeout)
    except subprocess.TimeoutExpired:
        return None
    if proc.returncode != 0:
        return None
    banner = _INPUT_RE.search(proc.stderr.decode("utf-8", "replace"))
    header: dict[str, str] = {"format": banner.group(1) if banner else ""}
    packets: list[tuple[int, int]] = []
    for line in proc.stdout.decode("ascii", "replace").splitlines():
        if line.startswith("#"):
            key, _, value = line[1:].partition(":")
            header[key.strip()] = value.strip()
            continue
        parts = [p.strip() for p in line.split(",")]
        if len(parts) < 6:
            continue
        flags = next((int(p[2:], 16) for p in parts[6:] if p.startswith("F=")), _KEY)
        packets.append((int(parts[2]), flags))
    return header, packets


def worth_indexing(n_frames: float, pixels: int, n_one_fps: float, max_frames: int) -> bool:
    """Before any index: can seeking pay at all? Not when every 1 fps frame is kept (the seek
    points are then most of the video's keyframes), nor when decoding everything is quick
    anyway (estimated at ~2.5 ns per pixel, below ``MIN_PLAIN_MS``), where the extra ffmpeg
    runs (~20 ms each) would cost more than they save."""
    return n_one_fps > max_frames and n_frames * pixels * 2.5e-6 >= MIN_PLAIN_MS


def keyframes_safe(path: str | Path, index: PacketIndex, *, timeout: float = 60.0) -> bool:
    """True if every keyframe is a safe seek point. The demuxer may land on any keyframe, and
    H.264 flags open-GOP I frames as keyframes too: only IDR frames (NAL type 5, kept by the
    ``filter_units`` bitstream filter in a second demux-only pass) are safe there."""
    if index.codec != "h264":
        return True
    idr = _framecrc(Path(path), timeout, "filter_units=pass_types=5")
    if idr is None:
        return False
    return bool(np.isin(index.pts[index.seek_frames], [p for p, _ in idr[1]]).all())


def packet_index(path: str | Path, *, timeout: float = 60.0) -> PacketIndex | None:
    """The stream's frames and keyframes from its packets (no decoding), or None when frame
    numbers cannot be trusted to match what a decoder yields (module docstring). H.264
    keyframes still need :func:`keyframes_safe` before seeking."""
    path = Path(path)
    found = _framecrc(path, timeout)
    if found is None:
        return None
    header, packets = found
    codec = header.get("codec_id 0", "")
    tb_text = header.get("tb 0", "")
    if (codec not in SEEK_CODECS or header["format"] not in SEEK_FORMATS or "/" not in tb_text
            or not packets):
        return None
    pts = np.array([p for p, _ in packets], dtype=np.int64)
    flags = np.array([f for _, f in packets], dtype=np.int64)
    if (pts == _NOPTS).any() or (flags & (_CORRUPT | _DISCARD)).any() or not flags[0] & _KEY:
        return None
    order = np.sort(pts)
    if (np.diff(order) <= 0).any() or pts[0] != order[0]:
        return None  # duplicate pts, or a first packet shown after others (open start)
    keys = np.sort(pts[(flags & _KEY) != 0])
    num, den = tb_text.split("/")
    width, _, height = header.get("dimensions 0", "0x0").partition("x")
    return PacketIndex(codec=codec, time_base=Fraction(int(num), int(den)), pts=order,
                       seek_frames=np.searchsorted(order, keys).astype(np.int64),
                       pixels=int(width or 0) * int(height or 0))


def _groups(index: PacketIndex, needed: np.ndarray) -> list[_Group]:
    """Needed frames grouped by the last safe seek point at or before each (0 = file start)."""
    groups: list[_Group] = []
    for n in needed.tolist():
        slot = int(np.searchsorted(index.seek_frames, n, side="right")) - 1
        key = int(index.seek_frames[slot]) if slot >= 0 else 0
        if groups and groups[-1].key == key:
            groups[-1] = _Group(key, (*groups[-1].frames, n))
        else:
            groups.append(_Group(key, (n,)))
    return groups


def worth_seeking(groups: list[_Group], plain_frames: int, pixels: int) -> bool:
    """True if decoding from the seek points costs well under the plain path's frame count.

    Each extra input costs about ``INPUT_OVERHEAD_FRAMES`` decodes plus a fixed few ms (open,
    probe), worth more frames of a small video (measured: ~4 ms per input at 320×240, ~25 ms
    at 1280×720, where one frame decodes in ~0.2 ms and ~2.5 ms).
    """
    per_input = INPUT_OVERHEAD_FRAMES + INPUT_OVERHEAD_PIXELS / max(1, pixels)
    cost = sum(g.frames[-1] - g.key + 1 for g in groups) + per_input * (len(groups) - 1)
    return cost <= MAX_COST_RATIO * plain_frames


def _seek_time(index: PacketIndex, key: int) -> str:
    """``-ss`` (absolute seconds) that makes the demuxer land on keyframe ``key``.

    Demuxers land on the last keyframe whose dts (MP4) or pts (Matroska) is at or before the
    target, and ffmpeg moves the target 3/23 s earlier for streams it knows reorder frames. The
    keyframe's pts plus min(3/23 s, 0.4 × the gap to the next keyframe) lands on it in all four
    cases; missing it only costs speed (an earlier keyframe) or a fallback (a later one).
    """
    pts = index.pts[key]
    slot = int(np.searchsorted(index.seek_frames, key, side="right"))
    gap = (index.pts[index.seek_frames[slot]] - pts) * index.time_base if slot < len(
        index.seek_frames) else Fraction(1)
    return f"{float(pts * index.time_base + min(Fraction(3, 23), gap * 2 / 5)):.6f}"


def _group_stream(path: Path, index: PacketIndex, group: _Group, size: int,
                  honor_sar: bool) -> ffmpeg.nodes.FilterableStream:
    """One input: seek before the group, pick its frames by pts, scale/crop as the plain path.

    ``-copyts`` keeps the stream's own pts in the filters, so ``select`` picks each needed frame
    by its pts wherever the demuxer's seek landed (on this keyframe or an earlier one; a later
    one would lose a frame, which the caller's frame count catches); ``-noaccurate_seek``: the
    select does the exact part. ``trim`` ends the input after the group's last frame, which stops
    its decoder.
    """
    options: dict[str, object] = {"threads": 1, "copyts": None}
    if group.key > 0:
        options.update(seek_timestamp=1, noaccurate_seek=None, ss=_seek_time(index, group.key))
    wanted = [int(index.pts[n]) for n in group.frames]
    stream = ffmpeg.input(str(path), **options).video
    stream = stream.filter("trim", end_pts=wanted[-1] + 1)
    # not(pts-P) is 1 exactly at pts P: no commas, which ffmpeg-python would escape badly.
    stream = stream.filter("select", "+".join(f"not(pts-{p})" for p in wanted))
    if honor_sar:
        stream = display_shape(stream)
    return stream.filter("scale", size, size, force_original_aspect_ratio="increase",
                         flags="bicubic").filter("crop", size, size)


def seek_frames(path: str | Path, index: PacketIndex, needed: np.ndarray, *, plain_frames: int,
                size: int, timeout: float, honor_sar: bool = False) -> np.ndarray | None:
    """Frames ``needed`` (sorted frame numbers) at ``size`` px decoded from their seek points,
    [len(needed), S, S, 3]; or None to decode every frame instead: seeking would save too little
    against the plain path's ``plain_frames``, ffmpeg failed, or a frame was not found."""
    path = Path(path)
    needed = np.asarray(needed, dtype=np.int64)
    if len(needed) == 0 or int(needed[-1]) >= len(index.pts):
        return None  # past the end: the plain path raises the error users know
    groups = _groups(index, needed)
    if not worth_seeking(groups, plain_frames, index.pixels):
        return None
    if not keyframes_safe(path, index, timeout=timeout):
        return None
    streams = [_group_stream(path, index, g, size, honor_sar) for g in groups]
    joined = streams[0] if len(streams) == 1 else ffmpeg.concat(*streams, v=1, a=0)
    argv = (joined.output("pipe:", format="rawvideo", pix_fmt="rgb24", fps_mode="passthrough")
            .global_args("-hide_banner", "-nostdin", "-loglevel", "error")
            .compile(cmd=ffmpeg_exe()))
    try:
        proc = subprocess.run(argv, capture_output=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return None
    if proc.returncode != 0 or len(proc.stdout) != len(needed) * size * size * 3:
        return None
    return np.frombuffer(proc.stdout, np.uint8).reshape(len(needed), size, size, 3)
