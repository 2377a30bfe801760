"""Every failure a lab meets is one ``Error:`` line with the file, the id and the fix (exit 1),
and every silent drop is said out loud.

Cases (issue #12, items 5–8): a missing ``--frames``; frames at another resolution than the CLIP;
``search --top-k 0``; an output path that cannot be created; a resume with changed settings;
``clip pretrain`` with fewer steps than the log interval and a stale ``clip.tmp``; a run without a
validation split; ``evaluate`` leaving captions out; ``--skip-bad`` and a video whose only
caption was empty; digests that disagree.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner, Result

import tests.student_fixtures as fixtures
from pipeline.data.frames_build import FramesConfig, build_frames
from pipeline.data.frames_store import FramesReader
from pipeline.data.manifest import Manifest
from pipeline.data.synth import SynthParams, render_dataset
from pipeline.distributed import DistInfo
from pipeline.models.checkpoint import save_model
from pipeline.models.clip import load_clip
from pipeline.models.student import Student
from pipeline.models.teachers import build_teacher
from pipeline.train.clip_pretrain import PretrainConfig, run_clip_pretrain
from pipeline.train.setup import OptimConfig
from pipeline.train.student import StudentTrainConfig
from pipeline.train.student_run import run_student
from stages.cli import main
from tests.student_fixtures import MAX_WORDS, F, make_cache, make_frames, make_manifest


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """Manifest, 32-px and 64-px frames, a cache, a tiny teacher and a tiny student."""
    root = tmp_path_factory.mktemp("cli_errors")
    manifest = make_manifest(root)
    ids = list(manifest.videos["video_id"])
    frames = make_frames(root / "frames.h5", ids)
    make_cache(root / "cache.h5", manifest, frames)
    make_cache(root / "other.h5", manifest, frames, frames_digest="f" * 64)
    size = fixtures.SIZE
    fixtures.SIZE = 64
    try:
        make_frames(root / "frames64.h5", ids)
    finally:
        fixtures.SIZE = size
    make_frames(root / "partial.h5", [v for v in ids if v != "v12"])  # a test video failed
    teacher = build_teacher("xclip", load_clip("tiny", seed=1), MAX_WORDS, F, temporal_layers=1)
    save_model(root / "teacher" / "model.pt", teacher)
    save_model(root / "student" / "model.pt", Student(load_clip("tiny", seed=0)),
               extra={"train_config": {"max_words": MAX_WORDS}, "role": "student"})
    return {"root": root, "manifest": manifest}


def _errors(result: Result) -> list[str]:
    assert result.exit_code != 0, result.output
    assert "Traceback" not in result.output, result.output
    return [line for line in result.output.splitlines() if line.startswith("Error:")]


def _train(world: dict, out: Path, *extra: str, frames: str = "frames.h5") -> list[str]:
    root = world["root"]
    return ["student", "train", "--out", str(out), "--frames", str(root / frames),
            "--manifest", str(root / "manifest"), "--device", "cpu", "--batch-size", "8",
            "--epochs", "1", *extra]


def _command(world: dict, which: str, frames: Path, out: Path) -> list[str]:
    root = world["root"]
    common = ["--frames", str(frames), "--manifest", str(root / "manifest"), "--device", "cpu"]
    return {
        "student train": ["student", "train", "--out", str(out), *common, "--batch-size", "8"],
        "teacher train": ["teacher", "train", "--name", "t", "--kind", "xclip", "--out", str(out),
                          *common,
                          "--batch-size", "8", "--options", '{"temporal_layers": 1}'],
        "teacher score": ["teacher", "score", "--name", "t", "--model",
                          str(root / "teacher"), "--out", str(out), *common],
        "index": ["index", "--model", str(root / "student"), "--frames", str(frames),
                  "--out", str(out), "--device", "cpu"],
    }[which]


@pytest.mark.parametrize("which", ["student train", "teacher train", "teacher score"])
def test_missing_frames_file(world: dict, tmp_path: Path, which: str) -> None:
    missing = tmp_path / "nope.h5"
    errors = _errors(CliRunner().invoke(main, _command(world, which, missing, tmp_path / "o")))
    assert errors == [f"Error: {missing}: frames file not found"]


@pytest.mark.parametrize("which", ["student train", "teacher train", "teacher score", "index"])
def test_frames_at_another_resolution(world: dict, tmp_path: Path, which: str) -> None:
    frames = world["root"] / "frames64.h5"
    errors = _errors(CliRunner().invoke(main, _command(world, which, frames, tmp_path / "o")))
    assert len(errors) == 1 and errors[0].startswith(f"Error: {frames}: frames are 64×64 px but")
    assert "takes 32×32 images" in errors[0] and "teachclip frames --size 32" in errors[0]
    assert not (tmp_path / "o").exists()


def test_search_top_k_zero(world: dict, tmp_path: Path) -> None:
    index = tmp_path / "e.h5"
    index.write_bytes(b"")
    result = CliRunner().invoke(main, ["search", "a red square", "--index", str(index),
                                       "--model", str(world["root"] / "student"),
                                       "--top-k", "0"])
    assert result.exit_code == 2 and "Invalid value for '--top-k': 0 is not in the range x>=1" \
        in result.output


def test_output_path_that_cannot_be_created(world: dict, tmp_path: Path) -> None:
    blocker = tmp_path / "afile"
    blocker.write_text("x")
    errors = _errors(CliRunner().invoke(main, _train(world, blocker / "run")))
    assert errors == [f"Error: {blocker}: cannot create the output directory (a file is in the "
                      "way: a part of the path is not a directory); choose an output path in a "
                      "writable directory"]
    if os.geteuid() != 0:  # root writes anywhere: only an unprivileged user can test this
        locked = tmp_path / "readonly"
        locked.mkdir(mode=0o555)
        errors = _errors(CliRunner().invoke(main, _train(world, locked / "run")))
        assert len(errors) == 1 and str(locked) in errors[0] and "writable" in errors[0]


def test_resume_with_changed_settings_names_dir_difference_and_fix(world: dict,
                                                                   tmp_path: Path) -> None:
    out = tmp_path / "run"
    config = StudentTrainConfig(optim=OptimConfig(epochs=2, batch_size=8), max_words=MAX_WORDS)
    steps = [0]

    def kill_in_second_epoch(n: int) -> None:
        steps[0] += n
        if steps[0] == 3:  # 2 steps per epoch: epoch 1 is checkpointed
            raise KeyboardInterrupt("simulated kill")

    with pytest.raises(KeyboardInterrupt):
        run_student(config=config, manifest=world["manifest"],
                    frames=FramesReader(world["root"] / "frames.h5"), cache_paths=[],
                    out_dir=out, device=torch.device("cpu"), dist_info=DistInfo(),
                    eval_split="", on_progress=kill_in_second_epoch)
    assert (tmp_path / "run.tmp" / "state.pt").exists()
    args = [*_train(world, out, "--eval-split", "", "--max-words", str(MAX_WORDS)), "--epochs",
            "2"]
    errors = _errors(CliRunner().invoke(main, [*args, "--lr", "0.0002"]))
    assert len(errors) == 1 and errors[0].startswith(f"Error: {tmp_path / 'run.tmp'}: ")
    assert "config.optim.lr: 0.0001 -> 0.0002" in errors[0]
    assert "rerun with the settings and inputs of that run" in errors[0]
    assert "delete this directory to start over" in errors[0]
    result = CliRunner().invoke(main, args)  # the original settings resume it
    assert result.exit_code == 0 and "resumed from epoch 1" in result.output


def test_no_validation_split_warns_in_one_line(world: dict, tmp_path: Path) -> None:
    result = CliRunner().invoke(main, _train(world, tmp_path / "run", "--eval-split", ""))
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert "Warning: no validation captions (split ''): the last epoch is kept instead of the " \
           "best; import with --val-fraction > 0 to select epochs" in lines
    assert "NoValidationWarning" not in result.output and "fit.py" not in result.output
    assert result.output.rstrip().endswith("last epoch 0 kept (no validation split)")


def test_evaluate_says_which_captions_it_left_out(world: dict, tmp_path: Path) -> None:
    root = world["root"]
    out = tmp_path / "metrics.json"
    result = CliRunner().invoke(main, ["evaluate", "--model", str(root / "student"), "--frames",
                                       str(root / "partial.h5"), "--manifest",
                                       str(root / "manifest"), "--out", str(out),
                                       "--device", "cpu"])
    assert result.exit_code == 0, result.output
    warning = [ln for ln in result.output.splitlines() if ln.startswith("Warning:")]
    assert len(warning) == 1 and "2 of 8 test captions left out" in warning[0]
    assert "v12_c0, v12_c1" in warning[0] and "R@K is over 6 queries" in warning[0]
    assert json.loads(out.with_name("metrics.provenance.json").read_text())[
        "dropped_captions"] == 2
    table = CliRunner().invoke(main, ["report", "--metrics", f"student={out}", "--out",
                                      str(tmp_path / "results.md")])
    assert table.exit_code == 0, table.output
    header, _, row = table.output.splitlines()[:3]
    assert "| dropped |" in header and row.split("|")[4].strip() == "2"


def test_skip_bad_drops_a_video_whose_only_caption_was_empty(tmp_path: Path) -> None:
    for name in ("a.mp4", "b.mp4"):
        (tmp_path / name).write_bytes(b"x")
    csv = tmp_path / "m.csv"
    csv.write_text("video_id,path,split,text\na,a.mp4,train,a red square\nb,b.mp4,train,\n")
    out = tmp_path / "manifest"
    strict = CliRunner().invoke(main, ["data", "import", "csv", str(csv), "--out", str(out)])
    assert _errors(strict) == [f"Error: {csv}:3: id 'b#0': empty caption"]
    result = CliRunner().invoke(main, ["data", "import", "csv", str(csv), "--out", str(out),
                                       "--skip-bad"])
    assert result.exit_code == 0, result.output
    manifest = Manifest.load(out)
    assert list(manifest.videos["video_id"]) == ["a"]
    skipped = (out / "skipped.csv").read_text()
    assert "empty caption" in skipped and "video has no caption left" in skipped


def test_digest_mismatch_names_both_files_and_the_fix(world: dict, tmp_path: Path) -> None:
    root = world["root"]
    errors = _errors(CliRunner().invoke(main, _train(world, tmp_path / "run", "--cache",
                                                     str(root / "other.h5"))))
    frames = root / "frames.h5"
    digest = FramesReader(frames).digest
    assert len(errors) == 1 and errors[0].startswith(f"Error: {root / 'other.h5'}: frames "
                                                     "digest mismatch: ")
    assert f"'{digest}' in {frames}" in errors[0]
    assert f"'{'f' * 64}' in other.h5 (what the teacher was scored on)" in errors[0]
    assert "pass the frames.h5 the cache was scored from" in errors[0] and "rescore" in errors[0]
    result = CliRunner().invoke(main, ["cache", "verify", str(root / "other.h5"), "--frames",
                                       str(frames)])
    assert result.exit_code == 1
    assert f"the --frames file has '{digest}', other.h5 was scored on" in result.output


SYNTH = SynthParams(seed=2, n_train=4, n_val=0, n_test=1, fps=5, min_duration=4.0,
                    max_duration=4.0, resolution=32, max_segments=2, min_segment_s=1.0,
                    max_segment_s=1.5)


def test_clip_pretrain_short_run_and_stale_tmp(tmp_path: Path) -> None:
    """Case 6: fewer steps than --log-every publish an empty log and leave no clip.tmp; a
    killed run's clip.tmp is refused for other settings (naming it and the fix) and resumed
    with the same ones."""
    render_dataset(tmp_path / "data", SYNTH, workers=2)
    build_frames(Manifest.load(tmp_path / "data"), tmp_path / "frames.h5",
                 FramesConfig(max_frames=6, size=32), workers=1)
    out = tmp_path / "clip"
    args = ["clip", "pretrain", "--frames", str(tmp_path / "frames.h5"), "--manifest",
            str(tmp_path / "data"), "--segments", str(tmp_path / "data" / "segments.csv"),
            "--out", str(out), "--epochs", "2", "--batch-size", "4", "--device", "cpu"]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    assert (out / "pretrain_log.tsv").read_text() == ""  # default --log-every 10 > steps
    assert (out / "config.json").exists() and not Path(f"{out}.tmp").exists()

    steps = [0]

    def kill_in_second_epoch(n: int) -> None:
        steps[0] += n
        if steps[0] == 3:  # 8 pairs / batch 4 = 2 steps per epoch: epoch 0 is checkpointed
            raise KeyboardInterrupt("simulated kill")

    config = PretrainConfig(epochs=2, batch_size=4)
    with pytest.raises(KeyboardInterrupt):
        run_clip_pretrain(config=config, frames=FramesReader(tmp_path / "frames.h5"),
                          manifest=Manifest.load(tmp_path / "data"),
                          segments_csv=tmp_path / "data" / "segments.csv", out_dir=out,
                          device=torch.device("cpu"), on_progress=kill_in_second_epoch)
    assert Path(f"{out}.tmp/train/state.pt").exists()
    errors = _errors(CliRunner().invoke(main, [*args, "--lr", "0.01"]))
    assert len(errors) == 1 and f"{out}.tmp/train" in errors[0]
    assert "config.lr: 0.001 -> 0.01" in errors[0] and "delete this directory" in errors[0]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    assert not Path(f"{out}.tmp").exists()
