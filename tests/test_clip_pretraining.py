"""CLIP pre-training of the embedded default: frame–phrase pairing, training, and timestamps."""

from __future__ import annotations

import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from pipeline.data.sampling import sample_video, select_evenly
from pipeline.data.video import ffmpeg_exe
from pipeline.models.clip import load_clip
from pipeline.models.tokenizer import ClipTokenizer
from pipeline.train.clip_pretrain import (
    ImageTextPairs,
    PretrainConfig,
    frame_phrase_pairs,
    pretrain_clip,
)


def test_frames_pair_with_the_segment_they_fall_in() -> None:
    frames = np.arange(2 * 4, dtype=np.uint8).reshape(2, 4, 1, 1, 1).repeat(3, axis=-1)
    mask = np.array([[1, 1, 1, 1], [1, 1, 1, 0]], dtype=bool)
    timestamps = np.array([[0.0, 1.0, 2.0, 3.0], [0.0, 1.0, 2.0, np.nan]])
    segments = pd.DataFrame({
        "video_id": ["a", "a", "b", "c"], "segment": [0, 1, 0, 0],
        "start": [0.5, 2.5, 0.0, 0.0], "end": [2.0, 4.0, 1.0, 9.0],
        "text": ["red", "blue", "green", "never"],
    })
    images, texts = frame_phrase_pairs(frames, mask, timestamps, ["a", "b"], segments,
                                       train_ids={"a", "b"})
    # a: t=1 in [0.5,2) -> red; t=3 in [2.5,4) -> blue; b: t=0 in [0,1) -> green; c not present
    assert texts == ["red", "blue", "green"]
    assert [int(i[0, 0, 0]) for i in images] == [1, 3, 4]


def test_pretraining_lowers_the_contrastive_loss(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    colours = ["red", "green", "blue", "yellow"]
    images = np.zeros((16, 32, 32, 3), dtype=np.uint8)
    texts = []
    palette = {"red": (255, 0, 0), "green": (0, 255, 0), "blue": (0, 0, 255),
               "yellow": (255, 255, 0)}
    for i in range(16):
        colour = colours[i % 4]
        images[i] = palette[colour]
        images[i] = np.clip(images[i] + rng.integers(0, 30, images[i].shape), 0, 255)
        texts.append(f"a {colour} square")
    ids, mask = ClipTokenizer.default().encode(texts, 8)
    pairs = ImageTextPairs(images, np.asarray(ids), np.asarray(mask))
    config = PretrainConfig(clip="tiny", epochs=15, batch_size=16, lr=3e-3, log_every=1,
                            warmup_fraction=0.0)
    towers, result = pretrain_clip(config=config, pairs=pairs, work_dir=tmp_path,
                                   device=torch.device("cpu"))
    log = pd.read_csv(tmp_path / "train_log.tsv", sep="\t")
    assert result.steps == 15
    assert log["total"].iloc[-3:].mean() < log["total"].iloc[:3].mean() - 0.3
    towers.model.save_pretrained(tmp_path / "clip")
    reloaded = load_clip(tmp_path / "clip")
    for (name, a), b in zip(towers.state_dict().items(), reloaded.state_dict().values(),
                            strict=True):
        assert torch.equal(a, b), name


def test_official_sampling_records_frame_timestamps(tmp_path: Path) -> None:
    video = tmp_path / "v.mp4"
    subprocess.run([ffmpeg_exe(), "-loglevel", "error", "-f", "lavfi", "-i",
                    "testsrc2=size=64x64:rate=8:duration=20", "-pix_fmt", "yuv420p", str(video)],
                   check=True)
    sampled = sample_video(video, policy="official", max_frames=12, size=32)
    assert sampled.timestamps is not None
    # 20 one-fps frames (0 s .. 19 s), linspace to 12 -> the kept frames' seconds
    np.testing.assert_allclose(sampled.timestamps, select_evenly(20, 12).astype(np.float32))
    short = sample_video(video, policy="official", max_frames=24, size=32)
    assert np.isnan(short.timestamps[20:]).all() and not np.isnan(short.timestamps[:20]).any()
