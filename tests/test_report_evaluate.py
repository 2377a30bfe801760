"""``teachclip evaluate`` for student and teacher checkpoints, and ``teachclip report``."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from pipeline.eval.report import load_results, markdown_table
from pipeline.models.checkpoint import save_model
from pipeline.models.clip import load_clip
from pipeline.models.student import Student
from pipeline.models.teachers import build_teacher
from stages.cli import main
from tests.student_fixtures import MAX_WORDS, F, make_frames, make_manifest

METRIC_KEYS = {"R1", "R5", "R10", "MedianR", "MeanR", "n_queries", "v2t_R1", "v2t_R5",
               "v2t_R10", "v2t_MedianR", "v2t_MeanR", "model", "kind", "role", "split"}


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> dict:
    root = tmp_path_factory.mktemp("evaluate")
    manifest = make_manifest(root, n_train=2, n_val=1, n_test=5, captions_per_video=3)
    make_frames(root / "frames.h5", list(manifest.videos["video_id"]), short=["v03"])
    student = Student(load_clip("tiny", seed=0))
    (root / "student").mkdir()
    save_model(root / "student" / "model.pt", student,
               extra={"train_config": {"max_words": MAX_WORDS}, "role": "student"})
    teacher = build_teacher("xclip", load_clip("tiny", seed=1), MAX_WORDS, F)
    save_model(root / "xclip.pt", teacher)
    return {"root": root}


def _evaluate(world: dict, model: Path, out: Path, *extra: str):
    root = world["root"]
    return CliRunner().invoke(main, ["evaluate", "--model", str(model), "--frames",
                                     str(root / "frames.h5"), "--manifest",
                                     str(root / "manifest"), "--out", str(out),
                                     "--device", "cpu", *extra])


@pytest.mark.parametrize("which", ["student", "teacher"])
def test_evaluate_writes_metrics(world: dict, tmp_path: Path, which: str) -> None:
    model = world["root"] / ("student" if which == "student" else "xclip.pt")
    out = tmp_path / "metrics.json"
    result = _evaluate(world, model, out)
    assert result.exit_code == 0, result.output
    metrics = json.loads(out.read_text())
    assert METRIC_KEYS <= set(metrics)
    assert metrics["n_queries"] == 15 and metrics["v2t_n_queries"] == 5
    assert metrics["kind"] == ("student" if which == "student" else "xclip")
    assert metrics["role"] == which
    assert 1 <= metrics["MedianR"] <= 5 and 0 <= metrics["R1"] <= metrics["R5"] <= 100
    assert metrics["R5"] == 100.0  # 5 test videos: every caption's video ranks within 5
    assert not Path(str(out) + ".tmp").exists()


def test_evaluate_refuses_wrong_frames_for_teacher(world: dict, tmp_path: Path) -> None:
    teacher = build_teacher("xclip", load_clip("tiny", seed=1), MAX_WORDS, F + 2)
    save_model(tmp_path / "x6.pt", teacher)
    result = _evaluate(world, tmp_path / "x6.pt", tmp_path / "m.json")
    assert result.exit_code == 1
    assert "max_frames" in result.output and str(F + 2) in result.output


def _metrics(path: Path, role: str, kind: str, r1: float, **more: float) -> Path:
    data = {"model": path.stem, "role": role, "kind": kind, "split": "test", "R1": r1,
            "R5": r1 + 20, "R10": r1 + 30, "MedianR": 3.0, "MeanR": 10.0, "v2t_R1": r1 + 1,
            **more}
    path.write_text(json.dumps(data))
    return path


def test_report_table_and_seed_aggregation(tmp_path: Path) -> None:
    s = [_metrics(tmp_path / f"s{i}.json", "student", "student", r1) for i, r1 in
         enumerate((40.0, 42.0, 44.0))]
    base = _metrics(tmp_path / "b.json", "baseline", "student", 38.0)
    teacher = _metrics(tmp_path / "t.json", "teacher", "xclip", 45.5)
    out, plot = tmp_path / "results.md", tmp_path / "results.tsv"
    result = CliRunner().invoke(main, [
        "report", "--metrics", f"teachclip={','.join(map(str, s))}", "--metrics",
        f"baseline={base}", "--metrics", f"xclip={teacher}", "--out", str(out),
        "--plot", str(plot)])
    assert result.exit_code == 0, result.output
    table = out.read_text()
    assert table.split("\n", 2)[2] in result.output  # printed too
    rows = [line for line in table.splitlines() if line.startswith("| ")]
    assert rows[0].split("|")[4:10] == [" R@1 ", " R@5 ", " R@10 ", " MdR ", " MnR ",
                                         " v2t R@1 "]
    assert [r.split("|")[1].strip() for r in rows[1:]] == ["xclip", "baseline", "teachclip"]
    std = float(np.std([40.0, 42.0, 44.0], ddof=1))
    assert f"42.0 ± {std:.1f}" in rows[3] and "| 3 |" in rows[3]
    assert "**45.5**" in rows[1]  # best R@1 in bold
    assert "sample standard deviation" in table
    tsv = plot.read_text().splitlines()
    header = tsv[0].split("\t")
    assert header[:3] == ["model", "role", "seeds"] and len(tsv) == 4
    assert float(tsv[3].split("\t")[header.index("R1")]) == pytest.approx(42.0)
    minmax = markdown_table(load_results([f"teachclip={','.join(map(str, s))}"]),
                            spread="minmax")
    assert "42.0 (40.0–44.0)" in minmax


def test_report_rejects_bad_input(tmp_path: Path) -> None:
    (tmp_path / "x.json").write_text("{}")
    result = CliRunner().invoke(main, ["report", "--metrics", f"a={tmp_path / 'x.json'}",
                                       "--out", str(tmp_path / "r.md")])
    assert result.exit_code == 1 and "R1" in result.output
    result = CliRunner().invoke(main, ["report", "--metrics", "no-equals-sign",
                                       "--out", str(tmp_path / "r.md")])
    assert result.exit_code == 1 and "NAME=PATH" in result.output
