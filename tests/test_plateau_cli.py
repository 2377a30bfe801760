"""Plateau on the user's road: `student train` records it and warns, `report` marks the row,
bad --patience / --label-smoothing values are an Error before any work."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from stages.cli import main
from tests.student_fixtures import make_frames, make_manifest


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> dict:
    root = tmp_path_factory.mktemp("plateau")
    manifest = make_manifest(root)
    make_frames(root / "frames.h5", list(manifest.videos["video_id"]))
    return {"root": root}


def _args(world: dict, out: Path, *extra: str) -> list[str]:
    return ["student", "train", "--out", str(out), "--frames", str(world["root"] / "frames.h5"),
            "--manifest", str(world["root"] / "manifest"), "--device", "cpu",
            "--batch-size", "8", "--temporal", "meanP", "--aggregation", "mean", *extra]


def test_summary_records_the_plateau_and_the_cli_warns_when_stopped_rising(
        world: dict, tmp_path: Path) -> None:
    out = tmp_path / "short"
    result = CliRunner().invoke(main, _args(world, out, "--epochs", "2"))
    assert result.exit_code == 0, result.output
    summary = json.loads((out / "summary.json").read_text())
    assert summary["epochs_run"] == 2 and summary["stopped_early"] is False
    assert summary["plateau_window"] == 3  # no early stopping: the fixed-budget window
    assert summary["plateau"] is False  # 2 epochs: the best is always among the last 3
    assert "Warning:" in result.output and "probably still improving" in result.output
    assert f"best epoch {summary['best_epoch'] + 1} of 2 (full budget)" in result.output

    evaluated = tmp_path / "short.json"
    result = CliRunner().invoke(main, ["evaluate", "--model", str(out), "--frames",
                                       str(world["root"] / "frames.h5"), "--manifest",
                                       str(world["root"] / "manifest"), "--device", "cpu",
                                       "--split", "test", "--name", "short",
                                       "--out", str(evaluated)])
    assert result.exit_code == 0, result.output
    table = tmp_path / "results.md"
    result = CliRunner().invoke(main, ["report", "--metrics", f"short={evaluated}",
                                       "--out", str(table)])
    assert result.exit_code == 0, result.output
    text = table.read_text()
    assert f"| {summary['best_epoch'] + 1}/2† |" in text
    assert "† = the best epoch is among the run's last few" in text
    assert "Warning: short: best epoch among the last few" in result.output


def test_patience_stops_the_run_and_it_counts_as_a_plateau(world: dict, tmp_path: Path) -> None:
    out = tmp_path / "patient"
    result = CliRunner().invoke(main, _args(world, out, "--epochs", "40", "--patience", "1",
                                            "--lr", "0"))  # lr 0: validation never improves
    assert result.exit_code == 0, result.output
    summary = json.loads((out / "summary.json").read_text())
    assert summary["best_epoch"] == 0 and summary["epochs_run"] == 2
    assert summary["stopped_early"] is True and summary["plateau"] is True
    assert summary["config"]["patience"] == 1
    assert "Warning:" not in result.output and "(stopped early)" in result.output
    assert len((out / "val_log.tsv").read_text().splitlines()) == 1 + 2


@pytest.mark.parametrize(("option", "value", "message"), [
    ("--patience", "-1", "--patience must be >= 0"),
    ("--label-smoothing", "1.0", "--label-smoothing must be in [0, 1)"),
    ("--label-smoothing", "-0.1", "--label-smoothing must be in [0, 1)"),
])
def test_bad_values_are_an_error_before_any_work(world: dict, tmp_path: Path, option: str,
                                                 value: str, message: str) -> None:
    out = tmp_path / "bad"
    result = CliRunner().invoke(main, _args(world, out, "--epochs", "1", option, value))
    assert result.exit_code == 1
    assert "Error:" in result.output and message in result.output
    assert not out.exists() and not Path(f"{out}.tmp").exists()


def test_label_smoothing_is_recorded_and_changes_training(world: dict, tmp_path: Path) -> None:
    logs = {}
    for eps in ("0", "0.3"):
        out = tmp_path / f"ls{eps}"
        result = CliRunner().invoke(main, _args(world, out, "--epochs", "1", "--log-every", "1",
                                                "--label-smoothing", eps))
        assert result.exit_code == 0, result.output
        summary = json.loads((out / "summary.json").read_text())
        assert summary["config"]["label_smoothing"] == float(eps)
        logs[eps] = (out / "train_log.tsv").read_text().splitlines()[1].split("\t")
    header = (tmp_path / "ls0" / "train_log.tsv").read_text().splitlines()[0].split("\t")
    gt = header.index("gt")
    assert float(logs["0.3"][gt]) != float(logs["0"][gt])
