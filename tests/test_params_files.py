"""Params files: every shipped one is valid, and every mistake in one is an Error before any work.

click ignores unknown default_map keys silently, so without the validation in
``stages.params`` a typo (``frames: {max_frame: 4}``) would run a stage with the wrong settings.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from stages.cli import main
from stages.params import load_params, validate_params

ROOT = Path(__file__).resolve().parents[1]
SHIPPED = sorted(p.name for p in ROOT.glob("params*.yaml"))
DATASETS = ("msrvtt9k", "msrvtt7k", "msvd", "vatex", "didemo", "activitynet")


def test_the_dataset_recipes_are_shipped() -> None:
    assert {f"params.{d}.yaml" for d in DATASETS} | {"params.yaml", "params.smoke.yaml"} \
        <= set(SHIPPED)


@pytest.mark.parametrize("name", SHIPPED)
def test_every_shipped_params_file_is_valid(name: str) -> None:
    params = load_params(ROOT / name)
    assert validate_params(params, main) == []


@pytest.mark.parametrize("name", SHIPPED)
def test_every_dvc_reference_resolves(name: str) -> None:
    """``cp params.X.yaml params.yaml && dvc repro`` needs every ``${...}`` of dvc.yaml."""
    params = yaml.safe_load((ROOT / name).read_text(encoding="utf-8"))
    text = (ROOT / "dvc.yaml").read_text(encoding="utf-8")
    refs = set(re.findall(r"\$\{([a-z_.]+)\}", text)) - {"key", "item"}
    assert refs, "dvc.yaml has no templating"
    for ref in sorted(refs):
        node = params
        for part in ref.split("."):
            assert isinstance(node, dict) and part in node, f"{name}: no {ref}"
            node = node[part]
    for table in ("teachers", "baselines", "students"):
        assert isinstance(params.get(table), dict), f"{name}: {table} must be a mapping"


@pytest.mark.parametrize("name", [f"params.{d}.yaml" for d in DATASETS[-2:]])
def test_paragraph_sets_use_64_frames_words_and_xclip_only(name: str) -> None:
    params = yaml.safe_load((ROOT / name).read_text(encoding="utf-8"))
    assert params["frames"]["max_frames"] == 64
    assert params["teacher"]["train"]["max_words"] == 64
    assert params["student"]["train"]["max_words"] == 64
    assert list(params["teachers"]) == ["xclip"]
    assert all(s["teachers"] == ["xclip"] for s in params["students"].values())


def _bad(tmp_path: Path, text: str) -> tuple[int, str]:
    path = tmp_path / "params.yaml"
    path.write_text(text, encoding="utf-8")
    out = tmp_path / "frames.h5"
    result = CliRunner().invoke(main, ["--params", str(path), "frames", "--out", str(out)])
    assert not out.exists(), "a stage ran although its params file is invalid"
    return result.exit_code, result.output


@pytest.mark.parametrize(("text", "expected"), [
    ("frames:\n  max_frame: 4\n",
     r"params.yaml:2: frames.max_frame: unknown key; did you mean 'max_frames'\?"),
    ("frames:\n  max_frames: four\n", r"params.yaml:2: frames.max_frames: .*not a valid integer"),
    ("frames:\n  policy: fast\n", r"params.yaml:2: frames.policy: .*'fast' is not one of"),
    ("framez:\n  max_frames: 4\n", r"params.yaml:1: framez: unknown key; did you mean 'frames'\?"),
    ("teacher:\n  trian: {}\n", r"params.yaml:2: teacher.trian: unknown key; did you mean 'train'"),
    ("teachers:\n  xclip:\n    kind: xclip\n    epoch: 3\n",
     r"params.yaml:4: teachers.xclip.epoch: unknown key; did you mean 'epochs'\?"),
    ("teachers:\n  xclip:\n    score:\n      batch: 3\n",
     r"teachers.xclip.score.batch: unknown key; did you mean 'batch_size'\?"),
    ("students:\n  s:\n    teachers: [xclip]\n    lr: fast\n",
     r"params.yaml:4: students.s.lr: .*not a valid float"),
    ("students:\n  s:\n    lr: 0.1\n", r"students.s.teachers: a student needs a list of teacher"),
    ("baselines:\n  b:\n    teachers: [xclip]\n", r"baselines.b.teachers: unknown key"),
    ("paths:\n  frame: x.h5\n", r"paths.frame: unknown key; did you mean 'frames'\?"),
    ("student:\n  train:\n    in_memory: 3\n", r"student.train.in_memory: expected true or false"),
    ("frames:\n  max_frames: [4]\n", r"frames.max_frames: expected a single integer value"),
])
def test_a_mistake_is_an_error_naming_file_line_key_and_fix(tmp_path: Path, text: str,
                                                            expected: str) -> None:
    code, output = _bad(tmp_path, text)
    assert code == 1
    assert output.startswith("Error: "), output
    assert re.search(expected, output), output
    assert "Traceback" not in output


def test_several_mistakes_are_counted(tmp_path: Path) -> None:
    code, output = _bad(tmp_path, "frames:\n  max_frame: 4\n  sise: 3\n")
    assert code == 1 and "(and 1 more problem(s))" in output


def test_paths_fill_the_options_that_name_artifacts(tmp_path: Path) -> None:
    """``paths:`` is the one place a path is written: --manifest/--out of frames come from it."""
    params = tmp_path / "params.yaml"
    params.write_text("paths:\n  dataset: nowhere/dataset\n", encoding="utf-8")
    result = CliRunner().invoke(main, ["--params", str(params), "frames"])
    assert result.exit_code != 0
    assert "nowhere/dataset" in result.output
