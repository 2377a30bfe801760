"""The command line itself: every option documented, devices a choice, teacher kinds implied by
their name only, and a frames/CLIP resolution mismatch refused at once with both values."""

from __future__ import annotations

import os
from pathlib import Path

import click
import numpy as np
import pytest
from click.testing import CliRunner

from pipeline.data.frames_store import FramesWriter
from pipeline.models.checkpoint import load_model, save_model
from pipeline.models.clip import load_clip
from pipeline.models.student import Student
from stages.cli import main
from stages.teacher_train import resolve_kind
from tests.student_fixtures import MAX_WORDS, make_frames, make_manifest


def _commands(group: click.Group, path: tuple[str, ...] = ("teachclip",)):
    for name, command in sorted(group.commands.items()):
        if isinstance(command, click.Group):
            yield path + (name,), command
            yield from _commands(command, path + (name,))
        else:
            yield path + (name,), command


def test_every_command_and_option_has_help_text() -> None:
    walked = list(_commands(main))
    names = {" ".join(p) for p, _ in walked}
    assert {"teachclip report", "teachclip search", "teachclip cache show",
            "teachclip teacher train", "teachclip data synth"} <= names  # the walk is complete
    missing = [f"{' '.join(path)} {'/'.join(param.opts)}"
               for path, command in walked for param in command.params
               if isinstance(param, click.Option) and not (param.help or "").strip()]
    assert missing == []
    undocumented = [" ".join(p) for p, c in walked if not (c.help or "").strip()]
    assert undocumented == []
    assert not [p.help for p in main.params if isinstance(p, click.Option) and not p.help]


def test_device_is_the_same_choice_everywhere() -> None:
    choices = {}
    for path, command in _commands(main):
        for param in command.params:
            if param.name == "device":
                choices[" ".join(path)] = tuple(param.type.choices)
    assert "teachclip clip pretrain" in choices and "teachclip cache show" in choices
    assert set(choices.values()) == {("auto", "cpu", "cuda")}, choices
    result = CliRunner().invoke(main, ["clip", "pretrain", "--frames", "f", "--manifest", "m",
                                       "--segments", "s", "--out", "o", "--device", "gpu"])
    assert result.exit_code == 2 and "'gpu' is not one of" in result.output


def test_teacher_kind_is_implied_only_by_a_kind_name() -> None:
    assert resolve_kind("ts2net", None) == "ts2net"
    assert resolve_kind("ts2net", "xclip") == "xclip"  # an explicit --kind wins
    assert resolve_kind("mine", "xpool") == "xpool"
    with pytest.raises(Exception, match="--kind"):
        resolve_kind("mine", None)
    result = CliRunner().invoke(main, ["teacher", "train", "--name", "mine", "--frames", "x.h5",
                                       "--manifest", "m"])
    assert result.exit_code == 1 and "Error: " in result.output
    assert "--kind" in result.output and "'mine'" in result.output


def test_teacher_train_by_kind_name_trains_that_kind(tmp_path: Path) -> None:
    manifest = make_manifest(tmp_path, n_train=4, n_val=1, n_test=1, captions_per_video=2)
    make_frames(tmp_path / "frames.h5", list(manifest.videos["video_id"]))
    out = tmp_path / "ts2net"
    result = CliRunner().invoke(main, [
        "teacher", "train", "--name", "ts2net", "--frames", str(tmp_path / "frames.h5"),
        "--manifest", str(tmp_path / "manifest"), "--out", str(out), "--epochs", "1",
        "--batch-size", "8", "--device", "cpu", "--options",
        '{"num_samples": 4}'])
    assert result.exit_code == 0, result.output
    model, extra = load_model(out / "model.pt")
    assert model.kind == "ts2net" and extra["train_config"]["kind"] == "ts2net"


def _frames_at(path: Path, video_ids: list[str], size: int) -> Path:
    """A finished frames.h5 at ``size`` px (as `teachclip frames --size` would write)."""
    tmp = path.with_name(path.name + ".tmp")
    attrs = {"resolution": size}
    with FramesWriter.open(tmp, video_ids, max_frames=4, size=size, attrs=attrs,
                           compression="none") as writer:
        for row in range(len(video_ids)):
            writer.write(row, np.full((4, size, size, 3), 7, np.uint8), np.ones(4, bool), 4)
        writer.finalize(attrs)
    os.replace(tmp, path)
    return path


def test_frames_and_clip_resolution_mismatch_is_refused_at_once(tmp_path: Path) -> None:
    manifest = make_manifest(tmp_path, n_train=4, n_val=1, n_test=2)
    frames = _frames_at(tmp_path / "frames64.h5", list(manifest.videos["video_id"]), 64)
    common = ["--frames", str(frames), "--manifest", str(tmp_path / "manifest"), "--device",
              "cpu"]
    save_model(tmp_path / "s" / "model.pt", Student(load_clip("tiny")),
               extra={"train_config": {"max_words": MAX_WORDS}})
    for args in (["student", "train", "--out", str(tmp_path / "st"), "--clip", "tiny",
                  "--batch-size", "4"],
                 ["teacher", "train", "--name", "xclip", "--out", str(tmp_path / "te"),
                  "--clip", "tiny", "--batch-size", "4"],
                 ["evaluate", "--model", str(tmp_path / "s"), "--out", str(tmp_path / "m.json")],
                 ["index", "--model", str(tmp_path / "s"), "--out", str(tmp_path / "e.h5")]):
        result = CliRunner().invoke(main, [*args, *common])
        assert result.exit_code == 1, (args[0], result.output)
        text = result.output
        assert f"Error: {frames}: frames are 64×64 px" in text, text
        assert "64×64" in text and "32×32" in text and "teachclip frames --size 32" in text
        assert not (tmp_path / "st").exists() and not (tmp_path / "st.tmp").exists()
