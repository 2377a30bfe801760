"""The synthetic dataset: determinism, captions vs the generator's plan, pixels vs segments."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

from pipeline.data.manifest import Manifest
from pipeline.data.synth import load_plan, render_dataset
from pipeline.data.synth_plan import COLORS, DIRECTIONS, SHAPES, SynthParams, plan_dataset
from pipeline.data.video import decode_frames
from stages.cli import main

SMALL = SynthParams(seed=3, n_train=6, n_val=2, n_test=4, captions_per_video=3, fps=6,
                    min_duration=4.0, max_duration=6.0, resolution=48, min_segments=1,
                    max_segments=2, min_segment_s=1.5, max_segment_s=2.0)


def _tree_digest(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def rendered(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("synth") / "data"
    render_dataset(out, SMALL, workers=2)
    return out


def test_same_seed_gives_identical_files(rendered: Path, tmp_path: Path) -> None:
    again = tmp_path / "again"
    render_dataset(again, SMALL, workers=1)
    assert _tree_digest(again) == _tree_digest(rendered)
    other = plan_dataset(SynthParams(**{**SMALL.__dict__, "seed": 4}))
    assert [v.captions for v in other] != [v.captions for v in load_plan(rendered)]
    assert not (tmp_path / "again.tmp").exists()


def test_manifest_layout(rendered: Path) -> None:
    manifest = Manifest.load(rendered)
    assert list(manifest.videos["split"].value_counts().sort_index()) == [4, 6, 2]
    assert len(manifest.captions) == 12 * 3
    assert all(p.is_file() and p.stat().st_size > 0 for p in manifest.resolved_paths())
    assert not Path(manifest.videos["path"].iloc[0]).is_absolute()


def _mentions(caption: str, vocab: dict) -> list[str]:
    """Attribute names mentioned in the caption, in order of appearance."""
    found = []
    for name, entry in vocab.items():
        words = entry if isinstance(entry[0], str) else entry[1]
        for word in words:
            start = 0
            while (pos := caption.find(word, start)) >= 0:
                found.append((pos, name, len(word)))
                start = pos + 1
    found.sort()
    out, end = [], -1
    for pos, name, length in found:  # drop matches nested inside a longer match
        if pos >= end:
            out.append(name)
            end = pos + length
    return out


def test_captions_describe_segments_in_order(rendered: Path) -> None:
    plan = load_plan(rendered)
    manifest = Manifest.load(rendered)
    for video in plan:
        texts = manifest.captions.loc[manifest.captions["video_id"] == video.video_id, "text"]
        assert sorted(texts) == sorted(video.captions)
        assert len(set(video.captions)) == len(video.captions)
        for caption in video.captions:
            assert _mentions(caption, COLORS) == [s.color for s in video.segments], caption
            assert _mentions(caption, SHAPES) == [s.shape for s in video.segments], caption
            assert _mentions(caption, DIRECTIONS) == [s.direction for s in video.segments]
    for split in ("train", "val", "test"):
        keys = [tuple(s.key() for s in v.segments) for v in plan if v.split == split]
        assert len(keys) == len(set(keys)), "captions would not identify their video"


def test_segments_csv_matches_plan(rendered: Path) -> None:
    table = pd.read_csv(rendered / "segments.csv")
    assert list(table.columns) == ["video_id", "segment", "start", "end", "text"]
    plan = {v.video_id: v for v in load_plan(rendered)}
    assert len(table) == sum(len(v.segments) for v in plan.values())
    for row in table.itertuples():
        seg = plan[row.video_id].segments[row.segment]
        assert row.start == pytest.approx(seg.start_frame / SMALL.fps)
        assert row.end == pytest.approx(seg.end_frame / SMALL.fps)
        assert seg.color in row.text and seg.shape in row.text and seg.direction in row.text


def _target_fraction(frame: np.ndarray, color: str) -> float:
    rgb = np.array(COLORS[color][0], dtype=np.int16)
    return float((np.abs(frame.astype(np.int16) - rgb).max(-1) < 45).mean())


def test_pixels_show_the_described_shape_only_in_segments(rendered: Path) -> None:
    for video in load_plan(rendered)[:6]:
        frames = decode_frames(rendered / "videos" / f"{video.video_id}.mp4")
        assert len(frames) == video.n_frames
        informative = np.zeros(video.n_frames, bool)
        for seg in video.segments:
            mid = (seg.start_frame + seg.end_frame) // 2
            assert _target_fraction(frames[mid], seg.color) > 0.01
            informative[seg.start_frame:seg.end_frame] = True
        for i in np.flatnonzero(~informative):
            assert max(_target_fraction(frames[i], c) for c in COLORS) < 0.002


def test_cli_synth_and_bad_params(tmp_path: Path) -> None:
    runner = CliRunner()
    out = tmp_path / "cli"
    result = runner.invoke(main, ["data", "synth", "--out", str(out), "--n-train", "2",
                                  "--n-val", "1", "--n-test", "1", "--resolution", "32",
                                  "--min-duration", "4", "--max-duration", "5",
                                  "--max-segments", "1", "--workers", "1"])
    assert result.exit_code == 0, result.output
    assert len(Manifest.load(out).videos) == 4
    result = runner.invoke(main, ["data", "synth", "--out", str(tmp_path / "bad"),
                                  "--min-duration", "3", "--max-segments", "3"])
    assert result.exit_code == 1
    assert "does not fit" in result.output
    assert not (tmp_path / "bad").exists()


def _described(caption: str, video) -> list:  # type: ignore[no-untyped-def]
    """The segments of ``video`` a caption names (colour word and shape word both present)."""
    colours, shapes = _mentions(caption, COLORS), _mentions(caption, SHAPES)
    return [s for s in video.segments if s.color in colours and s.shape in shapes]


def test_unique_partial_captions_have_exactly_one_right_video() -> None:
    params = SynthParams(seed=1, n_train=40, n_val=0, n_test=30, min_segments=2,
                         max_segments=3, min_segment_s=2.5, max_segment_s=3.5, min_duration=11,
                         max_duration=15, partial_caption_prob=1.0, min_described=1,
                         unique_captions=True)
    plan = plan_dataset(params)
    partial = 0
    for video in plan:
        others = [v for v in plan if v.split == video.split and v.index != video.index]
        for caption in video.captions:
            described = _described(caption, video)
            assert described, caption
            partial += len(described) < len(video.segments)
            keys = [s.key() for s in described]
            for other in others:  # nobody else shows these segments in this order
                it = iter(s.key() for s in other.segments)
                assert not all(k in it for k in keys), (caption, other.video_id)
    assert partial > len(plan)  # most captions name only part of their video
    # the same knobs without the check: some partial caption fits another video too
    loose = plan_dataset(SynthParams(**{**params.__dict__, "unique_captions": False}))
    assert any(
        all(k in iter(s.key() for s in other.segments)
            for k in [s.key() for s in _described(c, v)])
        for v in loose for c in v.captions for other in loose
        if other.split == v.split and other.index != v.index)


def test_min_described_bounds_partial_captions() -> None:
    params = SynthParams(seed=2, n_train=30, n_val=0, n_test=0, min_segments=3,
                         max_segments=3, min_segment_s=2.0, max_segment_s=3.0,
                         partial_caption_prob=1.0, min_described=2)
    counts = {len(_mentions(c, DIRECTIONS)) for v in plan_dataset(params) for c in v.captions}
    assert counts == {2}  # 3 segments, proper subsets of at least 2: exactly 2


def test_default_plan_is_unchanged_by_the_new_knobs() -> None:
    # the embedded default's videos must not move when the knobs exist but are off
    base = plan_dataset(SMALL)
    same = plan_dataset(SynthParams(**{**SMALL.__dict__, "min_described": 1,
                                       "unique_captions": False, "shape_scale": 1.0}))
    assert base == same


def test_shape_scale_draws_larger_shapes() -> None:
    from pipeline.data.synth import render_video_frames

    video = next(v for v in plan_dataset(SMALL) if v.segments)
    seg = video.segments[0]
    mid = (seg.start_frame + seg.end_frame) // 2
    small = render_video_frames(video, SMALL)[mid]
    large = render_video_frames(video, SynthParams(**{**SMALL.__dict__, "shape_scale": 1.5}))[mid]
    ratio = _target_fraction(large, seg.color) / _target_fraction(small, seg.color)
    assert 1.8 < ratio < 2.8  # area grows with the square of the radius (1.5² = 2.25)
