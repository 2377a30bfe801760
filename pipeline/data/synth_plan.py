"""The embedded default's plan: what each synthetic video shows and how its captions read.

Why it looks like this: TeachCLIP's point is that some frames matter more than others. Each video
has 1–3 *informative* segments (a shape of a colour moving in a direction, sometimes with a size)
separated by *filler* in random position and proportion. Captions describe the informative
segments in order, so a model that mean-pools all frames dilutes the signal, and one that weights
frames (AFA) can recover it. The (colour, shape, direction) sequence is unique within each split,
so a caption identifies its video only if the informative frames are attended.

Pure functions of the seed (:func:`plan_dataset`); rendering lives in :mod:`pipeline.data.synth`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from pipeline.errors import InputError

# ----------------------------------------------------------------------------- vocabulary
COLORS: dict[str, tuple[tuple[int, int, int], tuple[str, ...]]] = {
    "red": ((220, 30, 30), ("red", "crimson", "scarlet")),
    "green": ((30, 175, 50), ("green", "emerald")),
    "blue": ((40, 70, 235), ("blue", "cobalt")),
    "yellow": ((240, 220, 30), ("yellow", "golden")),
    "purple": ((150, 45, 200), ("purple", "violet")),
    "orange": ((250, 135, 15), ("orange", "tangerine")),
}
SHAPES: dict[str, tuple[str, ...]] = {
    "circle": ("circle", "disc", "ball"),
    "square": ("square", "box", "block"),
    "triangle": ("triangle", "three-sided shape"),
    "diamond": ("diamond", "rhombus"),
}
DIRECTIONS: dict[str, tuple[tuple[int, int], tuple[str, ...]]] = {
    # (dx, dy) in image coordinates (y grows downwards)
    "left": ((-1, 0), ("left", "to the left", "leftward")),
    "right": ((1, 0), ("right", "to the right", "rightward")),
    "up": ((0, -1), ("up", "upward", "toward the top")),
    "down": ((0, 1), ("down", "downward", "toward the bottom")),
}
SIZES: dict[str, tuple[float, tuple[str, ...]]] = {
    "small": (0.10, ("small", "tiny", "little")),
    "large": (0.17, ("large", "big")),
}
VERBS: tuple[tuple[str, str], ...] = (
    ("moves", "moving"), ("slides", "sliding"), ("glides", "gliding"),
    ("drifts", "drifting"), ("travels", "travelling"),
)


@dataclass(frozen=True)
class SynthParams:
    """Every knob of the synthetic set (the CLI options mirror these; defaults render in < 60 s)."""

    seed: int = 0
    n_train: int = 480
    n_val: int = 80
    n_test: int = 160
    captions_per_video: int = 3
    fps: int = 8
    min_duration: float = 10.0
    max_duration: float = 16.0
    resolution: int = 64
    min_segments: int = 1
    max_segments: int = 3
    min_segment_s: float = 2.0
    max_segment_s: float = 3.0
    size_mention_prob: float = 0.5
    # Real captions often describe only the salient part of a video: with this probability a
    # caption of a multi-segment video names a random non-empty proper subset of its segments
    # (in order). A single pooled vector then has to match a caption that covers part of the
    # video, which is where fine-grained (frame–word) teachers are strongest.
    partial_caption_prob: float = 0.0
    #: Fewest segments a partial caption names (1 = any non-empty proper subset).
    min_described: int = 1
    #: Re-draw a caption while another video of its split also shows what it describes (its
    #: segments in the same order), so partial captions still have exactly one right video.
    unique_captions: bool = False
    filler_difficulty: float = 0.5  # 0: flat background, 1: dense high-contrast clutter
    #: Multiplies every shape's radius (1 = SIZES): larger shapes are easier to tell apart at
    #: the model's resolution, so the benchmark tests aggregation rather than eyesight.
    shape_scale: float = 1.0
    codec: str = "auto"  # libx264 when available, else mpeg4
    crf: int = 20

    def validate(self) -> None:
        """Reject parameter combinations that cannot produce a valid dataset."""
        if min(self.n_train, self.n_val, self.n_test) < 0 or self.captions_per_video < 1:
            raise InputError("video counts must be >= 0 and captions_per_video >= 1")
        if self.fps < 1 or self.resolution < 16:
            raise InputError("fps must be >= 1 and resolution >= 16")
        if not 1 <= self.min_segments <= self.max_segments:
            raise InputError("need 1 <= min_segments <= max_segments")
        if not 0 <= self.partial_caption_prob <= 1:
            raise InputError("partial_caption_prob must be in [0, 1]")
        if self.min_described < 1:
            raise InputError("min_described must be >= 1")
        if not 0 < self.min_segment_s <= self.max_segment_s:
            raise InputError("need 0 < min_segment_s <= max_segment_s")
        if not 0 < self.min_duration <= self.max_duration:
            raise InputError("need 0 < min_duration <= max_duration")
        if self.max_segments * self.max_segment_s > self.min_duration:
            raise InputError(
                f"max_segments × max_segment_s = {self.max_segments * self.max_segment_s:g} s "
                f"does not fit in min_duration = {self.min_duration:g} s"
            )
        if not 0.25 <= self.shape_scale <= 1.6:
            raise InputError("shape_scale must be in [0.25, 1.6]")
        if not 0.0 <= self.filler_difficulty <= 1.0:
            raise InputError("filler_difficulty must be in [0, 1]")


@dataclass(frozen=True)
class Segment:
    """One informative segment: frames ``[start_frame, end_frame)`` show this shape moving."""

    start_frame: int
    end_frame: int
    color: str
    shape: str
    direction: str
    size: str

    def key(self) -> tuple[str, str, str]:
        """The attributes captions always mention (size is optional in captions)."""
        return (self.color, self.shape, self.direction)


@dataclass(frozen=True)
class SynthVideo:
    """The plan of one video: everything needed to render it and to check its captions."""

    index: int
    video_id: str
    split: str
    n_frames: int
    segments: tuple[Segment, ...]
    captions: tuple[str, ...] = field(default_factory=tuple)


# ----------------------------------------------------------------------------- captions
def _with_article(words: str) -> str:
    return ("an " if words[0] in "aeiou" else "a ") + words


def segment_phrase(segment: Segment, *, with_size: bool = True) -> str:
    """Canonical phrase of one segment (segments.csv ``text``): "a small red circle moves left"."""
    size = f"{segment.size} " if with_size else ""
    noun = _with_article(f"{size}{segment.color} {segment.shape}")
    return f"{noun} moves {segment.direction}"


def _paraphrase(segment: Segment, rng: np.random.Generator, size_prob: float,
                gerund: bool) -> str:
    colour = str(rng.choice(COLORS[segment.color][1]))
    shape = str(rng.choice(SHAPES[segment.shape]))
    where = str(rng.choice(DIRECTIONS[segment.direction][1]))
    verb = VERBS[int(rng.integers(len(VERBS)))][1 if gerund else 0]
    words = f"{colour} {shape}"
    if rng.random() < size_prob:
        words = f"{rng.choice(SIZES[segment.size][1])} {words}"
    return f"{_with_article(words)} {verb} {where}"


def make_caption(segments: Sequence[Segment], rng: np.random.Generator, size_prob: float) -> str:
    """One paraphrased caption naming every segment in temporal order."""
    style = int(rng.integers(4))
    gerund = style == 3
    parts = [_paraphrase(s, rng, size_prob, gerund) for s in segments]
    if len(parts) == 1:
        prefix = ("", "", "we see ", "a clip of ")[style]
        return prefix + parts[0]
    if style == 0:
        return ", then ".join(parts)
    if style == 1:
        middle = [f"then {p}" for p in parts[1:-1]]
        return ", ".join([f"first {parts[0]}", *middle, f"and finally {parts[-1]}"])
    if style == 2:
        return "; after that, ".join(parts)
    return "a clip of " + " followed by ".join(parts)


def make_captions(segments: Sequence[Segment], n: int, rng: np.random.Generator,
                  size_prob: float, partial_prob: float = 0.0, min_described: int = 1,
                  ambiguous: Callable[[Sequence[Segment]], bool] | None = None
                  ) -> tuple[str, ...]:
    """``n`` distinct paraphrases when the template space allows (else duplicates).

    With ``partial_prob`` a caption describes a random proper subset of the segments (at least
    ``min_described`` of them); a subset for which ``ambiguous`` is true (another video shows it
    too) is drawn again.
    """
    out: list[str] = []
    for _ in range(50 * n):
        described = _described_segments(segments, rng, partial_prob, min_described)
        if ambiguous is not None and len(described) < len(segments) and ambiguous(described):
            continue
        caption = make_caption(described, rng, size_prob)
        if caption not in out:
            out.append(caption)
        if len(out) == n:
            break
    while len(out) < n:
        out.append(make_caption(segments, rng, size_prob))
    return tuple(out)


def _described_segments(segments: Sequence[Segment], rng: np.random.Generator,
                        partial_prob: float, min_described: int = 1) -> Sequence[Segment]:
    """All segments, or (with ``partial_prob``) a random proper subset of at least
    ``min_described`` segments, in order."""
    if (len(segments) <= min_described or partial_prob <= 0
            or rng.random() >= partial_prob):
        return segments
    k = int(rng.integers(min_described, len(segments)))
    keep = np.sort(rng.choice(len(segments), size=k, replace=False))
    return [segments[int(i)] for i in keep]


# ----------------------------------------------------------------------------- plan
def _plan_segments(rng: np.random.Generator, params: SynthParams, n_frames: int,
                   n_segments: int) -> tuple[Segment, ...]:
    fps = params.fps
    lengths = rng.integers(round(params.min_segment_s * fps), round(params.max_segment_s * fps) + 1,
                           size=n_segments)
    filler = n_frames - int(lengths.sum())
    gaps = np.floor(rng.dirichlet(np.ones(n_segments + 1)) * filler).astype(int)
    gaps[-1] += filler - int(gaps.sum())
    colors, shapes = list(COLORS), list(SHAPES)
    directions, sizes = list(DIRECTIONS), list(SIZES)
    segments: list[Segment] = []
    cursor = 0
    for i in range(n_segments):
        cursor += int(gaps[i])
        while True:
            color = colors[int(rng.integers(len(colors)))]
            shape = shapes[int(rng.integers(len(shapes)))]
            if not segments or (segments[-1].color, segments[-1].shape) != (color, shape):
                break
        segments.append(Segment(
            start_frame=cursor, end_frame=cursor + int(lengths[i]), color=color, shape=shape,
            direction=directions[int(rng.integers(len(directions)))],
            size=sizes[int(rng.integers(len(sizes)))],
        ))
        cursor += int(lengths[i])
    return tuple(segments)


def plan_dataset(params: SynthParams) -> list[SynthVideo]:
    """Deterministic plan of every video (attributes, timings, captions), in split order.

    The (colour, shape, direction) sequence is unique within a split: rejection sampling makes the
    captions discriminative among the test set.
    """
    params.validate()
    rng = np.random.default_rng([params.seed, 0])
    videos: list[SynthVideo] = []
    index = 0
    for split, count in (("train", params.n_train), ("val", params.n_val),
                         ("test", params.n_test)):
        seen: set[tuple[tuple[str, str, str], ...]] = set()
        for _ in range(count):
            for _attempt in range(1000):
                seconds = rng.uniform(params.min_duration, params.max_duration)
                n_frames = max(1, round(seconds * params.fps))
                n_segments = int(rng.integers(params.min_segments, params.max_segments + 1))
                segments = _plan_segments(rng, params, n_frames, n_segments)
                key = tuple(s.key() for s in segments)
                if key not in seen and not (params.unique_captions
                                            and _nested(key, seen)):
                    break
            else:
                raise InputError(f"cannot make {count} distinct {split} videos from the "
                                 "attribute space; lower the count or raise max_segments")
            seen.add(key)
            captions: tuple[str, ...] = ()
            if not params.unique_captions:
                captions = make_captions(segments, params.captions_per_video, rng,
                                         params.size_mention_prob, params.partial_caption_prob,
                                         params.min_described)
            videos.append(SynthVideo(index=index, video_id=f"synth{index:05d}", split=split,
                                     n_frames=n_frames, segments=segments, captions=captions))
            index += 1
    if params.unique_captions:
        videos = _unique_captions(videos, params, rng)
    return videos


def _contains(longer: tuple, shorter: tuple) -> bool:
    """Whether ``shorter`` is an ordered subsequence of ``longer``."""
    it = iter(longer)
    return all(k in it for k in shorter)


def _nested(key: tuple, seen: set) -> bool:
    """Whether a planned sequence contains, or is contained in, one already in the split (then
    a full caption of one would also describe the other)."""
    return any(_contains(key, other) or _contains(other, key) for other in seen)


def _shows(video: SynthVideo, described: Sequence[Segment]) -> bool:
    """Whether ``video`` shows the described segments' (colour, shape, direction) in order."""
    keys = iter(s.key() for s in video.segments)
    return all(d.key() in keys for d in described)


def _unique_captions(videos: list[SynthVideo], params: SynthParams,
                     rng: np.random.Generator) -> list[SynthVideo]:
    """Captions drawn after the whole split is planned, so each can be checked against the
    other videos of its split (a caption no other video matches has one right answer)."""
    out = []
    for video in videos:
        others = [v for v in videos if v.split == video.split and v.index != video.index]
        captions = make_captions(
            video.segments, params.captions_per_video, rng, params.size_mention_prob,
            params.partial_caption_prob, params.min_described,
            ambiguous=lambda described, others=others: any(_shows(v, described)
                                                              for v in others))
        out.append(SynthVideo(index=video.index, video_id=video.video_id, split=video.split,
                              n_frames=video.n_frames, segments=video.segments,
                              captions=captions))
    return out


# ----------------------------------------------------------------------------- pixels
