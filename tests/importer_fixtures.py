"""Builders of tiny datasets in the real official file formats (placeholder empty video files)."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import pytest

from pipeline.errors import InputError


def touch(directory: Path, *names: str) -> None:
    """Create empty placeholder video files (importers only check that they exist)."""
    directory.mkdir(parents=True, exist_ok=True)
    for name in names:
        (directory / name).parent.mkdir(parents=True, exist_ok=True)
        (directory / name).write_bytes(b"")


def write_text(path: Path, text: str | bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text, encoding="utf-8")
    return path


def write_json(path: Path, data: object) -> Path:
    return write_text(path, json.dumps(data, indent=1))


MSRVTT_SENTENCES = [
    ("video1", "a man plays guitar"),
    ("video0", "a cat sleeps"),
    ("video3", "json caption of a test video (unused)"),
    ("video0", "a cat is sleeping on a sofa"),
    ("video2", "cars race on a track"),
    ("video1", "someone is playing music"),
]


def make_msrvtt(root: Path, *, prefix: str = "MSRVTT", train_name: str = "MSRVTT_train.9k.csv",
                test_name: str = "MSRVTT_JSFUSION_test.csv") -> Path:
    """MSR-VTT layout: Annotations/{json,csvs}, VideoData/ with .mp4, .avi and a bare name."""
    ann = root / "Annotations"
    write_json(ann / f"{prefix}_data.json", {
        "info": {"year": 2016},
        "videos": [{"id": i, "video_id": f"video{i}", "split": "x"} for i in range(5)],
        "sentences": [{"caption": c, "video_id": v, "sen_id": i}
                      for i, (v, c) in enumerate(MSRVTT_SENTENCES)],
    })
    write_text(ann / train_name, "video_id\nvideo0\nvideo1\nvideo2\n")
    write_text(ann / test_name,
               "key,vid_key,video_id,sentence\n"
               "ret0,msr3,video3,a person cooks\n"
               "ret1,msr4,video4,\"a dog, running\"\n"
               "ret2,msr3,video3,someone cooks pasta\n")
    touch(root / "VideoData", "video0.mp4", "video1.avi", "video2.mp4", "video3.mp4", "video4")
    return root


def make_msvd(root: Path) -> Path:
    ann = root / "Annotations"
    ann.mkdir(parents=True, exist_ok=True)
    captions = {
        "vidA_1_5": [["a", "man", "plays", "a", "guitar"], ["man", "playing"]],
        "vidB_0_3": [["a", "dog", "runs"]],
        "vidC_2_9": [["a", "woman", "sings"], ["singing"]],
        "unused_0_1": [["not", "listed"]],
    }
    (ann / "raw-captions.pkl").write_bytes(pickle.dumps(captions))
    write_text(ann / "train_list.txt", "vidA_1_5\nvidB_0_3\n")
    write_text(ann / "val_list.txt", "")
    write_text(ann / "test_list.txt", "vidC_2_9\n")
    touch(root / "VideoData", "vidA_1_5.avi", "sub/vidB_0_3.avi", "vidC_2_9.avi", "unused_0_1.avi")
    return root


def make_didemo(root: Path) -> Path:
    ann = root / "Annotations"
    write_text(ann / "train_list.txt", "v1@N0_a\nv2@N0_b\n")
    write_json(ann / "train_data.json", [
        {"video": "v2@N0_b", "times": [[0, 0]], "description": "first of two"},
        {"video": "v1@N0_a", "times": [[1, 2], [1, 1]], "description": "the dog jumps "},
        {"video": "other", "times": [[0, 0]], "description": "not in the list"},
        {"video": "v2@N0_b", "times": [[3, 4]], "description": "second of two"},
    ])
    write_text(ann / "val_list.txt", "")
    write_json(ann / "val_data.json", [])
    write_text(ann / "test_list.txt", "v3@N0_c\n")
    write_json(ann / "test_data.json", [
        {"video": "v3@N0_c", "times": [[0, 1]], "description": "a test moment"},
    ])
    touch(root / "VideoData", "v1@N0_a.mp4", "v2@N0_b.mov", "v3@N0_c.mp4")
    return root


def make_activitynet(root: Path) -> Path:
    ann = root / "Annotations"
    write_json(ann / "train_ids.json", ["v_aaa", "v_bbb", "v_ccc"])
    write_json(ann / "train.json", {
        "v_aaa": {"duration": 82.73, "timestamps": [[0, 1], [1, 2]],
                  "sentences": ["A man runs.", " He stops. "]},
        "v_bbb": {"duration": 10.0, "timestamps": [[0, 1]], "sentences": ["Rain falls."]},
        "v_ccc": {"duration": 5.2, "timestamps": [[0, 1]], "sentences": ["A cat."]},
    })
    write_json(ann / "val_ids.json", ["v_ddd"])
    write_json(ann / "val_1.json", {
        "v_ddd": {"duration": 30.01, "timestamps": [[0, 1]], "sentences": ["Test video."]},
    })
    touch(root / "VideoData", "v_aaa.mp4", "v_bbb.mkv", "v_ccc.webm", "v_ddd.mp4")
    return root


def make_teachclip_txt(root: Path, set_name: str = "msrvtt1k-test") -> Path:
    write_text(root / "VideoSet" / f"{set_name}.txt", "video7020\nvideo7021\nvideo7022\n")
    write_text(root / "QuerySet" / f"{set_name}-query.txt",
               "video7021#enc#0\ta dog\twith a tab\n"
               "video7020#enc#0\t a woman is cooking \n"
               "video7020#enc#1\tcooking in a kitchen\n")
    write_text(root / "Annotations" / "gt.txt",
               "video7020#enc#0\tvideo7020\n"
               "video7021#enc#0\tvideo7021\n"
               "video7020#enc#1\tvideo7020\n")
    touch(root / "VideoData", "video7020.mp4", "video7021.avi", "video7022")
    return root


def expect_input_error(fn, *, file: str, line: int | None = None,
                       item_id: str | None = None) -> InputError:
    """Call ``fn`` and check the InputError names this file (suffix), line and id."""
    with pytest.raises(InputError) as info:
        fn()
    err = info.value
    assert err.file is not None and err.file.endswith(file), err
    assert err.line == line, err
    assert err.item_id == item_id, err
    return err
