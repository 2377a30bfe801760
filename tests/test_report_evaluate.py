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

NUMBER_KEYS = {"R1", "R5", "R10", "R50", "MedianR", "MeanR", "v2t_R1", "v2t_R5", "v2t_R10",
               "v2t_R50", "v2t_MedianR", "v2t_MeanR"}
PROVENANCE_KEYS = {"model", "kind", "role", "split", "n_queries", "v2t_n_queries", "n_videos",
                   "dropped_captions", "model_sha256", "model_path", "frames_digest",
                   "manifest_digest", "seed"}
STUDENT_SEED = 5  # the training seed the fixture's student checkpoint records


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> dict:
    root = tmp_path_factory.mktemp("evaluate")
    manifest = make_manifest(root, n_train=2, n_val=1, n_test=5, captions_per_video=3)
    make_frames(root / "frames.h5", list(manifest.videos["video_id"]), short=["v03"])
    student = Student(load_clip("tiny", seed=0))
    (root / "student").mkdir()
    save_model(root / "student" / "model.pt", student,
               extra={"train_config": {"max_words": MAX_WORDS, "seed": STUDENT_SEED},
                      "role": "student"})
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
    numbers = json.loads(out.read_text())
    assert set(numbers) == NUMBER_KEYS  # numbers only: `dvc metrics show` stays narrow
    assert all(isinstance(v, float) for v in numbers.values())
    provenance = json.loads((tmp_path / "metrics.provenance.json").read_text())
    assert set(provenance) == PROVENANCE_KEYS
    assert provenance["model_path"] == str(model / "model.pt" if model.is_dir() else model)
    # the training seed is provenance (report --paired pairs seeds by it); the teacher here
    # records none, like an imported release
    assert provenance["seed"] == (STUDENT_SEED if which == "student" else None)
    metrics = load_results([f"m={out}"])[0].runs[0]  # what report reads: both files merged
    assert metrics["n_queries"] == 15 and metrics["v2t_n_queries"] == 5
    assert metrics["kind"] == ("student" if which == "student" else "xclip")
    assert metrics["role"] == which
    assert 1 <= metrics["MedianR"] <= 5 and 0 <= metrics["R1"] <= metrics["R5"] <= 100
    assert metrics["R5"] == 100.0  # 5 test videos: every caption's video ranks within 5
    assert not Path(str(out) + ".tmp").exists()
    assert "metrics.provenance.json" in result.output


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


# ------------------------------------------------------------------ pictures from real outputs
@pytest.fixture(scope="module")
def evaluated(world: dict) -> dict:
    """Two seeds of a really trained student (train/val logs) and a teacher, evaluated."""
    root = world["root"]
    specs: dict[str, list[Path]] = {"student": [], "teacher_xclip": []}
    for seed in (1, 2):
        out = root / f"trained{seed}"
        result = CliRunner().invoke(main, [
            "student", "train", "--out", str(out), "--frames", str(root / "frames.h5"),
            "--manifest", str(root / "manifest"), "--device", "cpu", "--batch-size", "6",
            "--epochs", "2", "--log-every", "1", "--seed", str(seed), "--lr", "1e-3"])
        assert result.exit_code == 0, result.output
        specs["student"].append(root / f"student{seed}.json")
        assert _evaluate(world, out, specs["student"][-1]).exit_code == 0
    specs["teacher_xclip"].append(root / "teacher.json")
    assert _evaluate(world, root / "xclip.pt", specs["teacher_xclip"][0]).exit_code == 0
    return {"root": root, "specs": [f"{k}={','.join(map(str, v))}" for k, v in specs.items()]}


def test_report_draws_results_and_curves(evaluated: dict, tmp_path: Path) -> None:
    from pipeline.eval.plots import ROLE_COLOURS
    from tests.picture_checks import assert_picture, colour_fraction

    plot, curves, tsv = tmp_path / "results.png", tmp_path / "curves.png", tmp_path / "r.tsv"
    args = ["report", "--out", str(tmp_path / "r.md"), "--plot", str(tsv), "--plot", str(plot),
            "--curves", str(curves)]
    for spec in evaluated["specs"]:
        args += ["--metrics", spec]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    assert "no training logs for teacher_xclip" in result.output  # a saved, untrained teacher
    image = assert_picture(plot, min_width=800)
    rgb = {role: tuple(int(c[i:i + 2], 16) / 255 for i in (1, 3, 5))
           for role, c in ROLE_COLOURS.items()}
    # trained without a cache, the student is a baseline: one bar colour per role present
    assert colour_fraction(image, rgb["teacher"]) > 0.005
    assert colour_fraction(image, rgb["baseline"]) > 0.005
    assert colour_fraction(image, rgb["student"]) == 0.0
    assert_picture(curves, min_width=800)
    assert len(tsv.read_text().splitlines()) == 3  # the table output still works beside it


def test_curves_need_logs_and_png(evaluated: dict, tmp_path: Path) -> None:
    teacher_only = [s for s in evaluated["specs"] if s.startswith("teacher")]
    result = CliRunner().invoke(main, ["report", "--metrics", teacher_only[0], "--out",
                                       str(tmp_path / "r.md"), "--curves",
                                       str(tmp_path / "c.png")])
    assert result.exit_code == 1 and "none of the models has training logs" in result.output
    result = CliRunner().invoke(main, ["report", "--metrics", teacher_only[0], "--out",
                                       str(tmp_path / "r.md"), "--curves",
                                       str(tmp_path / "c.svg")])
    assert result.exit_code == 1 and ".png" in result.output
    assert not (tmp_path / "r.md").exists()  # refused before anything was written
    result = CliRunner().invoke(main, ["report", "--metrics", teacher_only[0], "--out",
                                       str(tmp_path / "r.md"), "--curves",
                                       str(tmp_path / "c.png"), "--logs",
                                       f"teacher_xclip={evaluated['root'] / 'trained1'}"])
    assert result.exit_code == 0, result.output  # --logs points at a folder with logs
    assert (tmp_path / "c.png").stat().st_size > 1000


def test_picture_without_matplotlib_is_a_clear_error(evaluated: dict, tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    import sys

    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib -> ImportError
    result = CliRunner().invoke(main, ["report", "--metrics", evaluated["specs"][0], "--out",
                                       str(tmp_path / "r.md"), "--plot",
                                       str(tmp_path / "p.png")])
    assert result.exit_code == 1
    assert "Error: " in result.output and "pip install 'teachclip[plots]'" in result.output
    assert not (tmp_path / "p.png").exists() and not (tmp_path / "r.md").exists()


def test_dvc_metrics_show_fits_200_columns(evaluated: dict, tmp_path: Path) -> None:
    """The embedded default's ten metrics files (real evaluate output) under their dvc.yaml
    names: ``dvc metrics show`` prints no line wider than 200 characters."""
    import shutil
    import subprocess
    import sys

    student = Path(evaluated["specs"][0].split("=")[1].split(",")[0])
    teacher = Path(evaluated["specs"][1].split("=")[1])
    names = [f"data/teachers/{t}/cache/metrics.json" for t in ("xclip", "ts2net", "xpool")]
    names += [f"data/metrics/student_{s}.json" for s in (
        "baseline", "baseline_seqtransf", "baseline_afa", "xclip", "ts2net", "xpool",
        "xclip_ts2net")]
    for i, name in enumerate(names):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(teacher if i < 3 else student, tmp_path / name)
    (tmp_path / "dvc.yaml").write_text("metrics:\n" + "".join(f"  - {n}\n" for n in names))
    subprocess.run(["git", "init", "-q"], cwd=tmp_path, check=True)
    subprocess.run([sys.executable, "-m", "dvc", "init", "-q"], cwd=tmp_path, check=True)
    proc = subprocess.run([sys.executable, "-m", "dvc", "metrics", "show"], cwd=tmp_path,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert len(lines) == 11 and "R1" in lines[0] and "v2t_MedianR" in lines[0]
    assert max(map(len, lines)) <= 200, max(map(len, lines))
