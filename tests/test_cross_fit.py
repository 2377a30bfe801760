"""Cross-fitted teacher caches: folds over videos, fold teachers, and per-fold scoring.

What would break: a caption scored by a fold teacher that trained on its video, folds that are
unbalanced or depend on row order, a fold teacher trained on its own fold, fold models given in
the wrong order or mixed with an ordinary teacher accepted silently, a cross-fitted cache that
does not say so.
"""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
from click.testing import CliRunner
from test_teacher_stage import TinyInputs, make_inputs, read_arrays, run_cli, score_args

from pipeline.atomic import sha256_file
from pipeline.cache.schema import CacheMeta
from pipeline.data.folds import check_fold, train_folds, video_folds, without_fold
from pipeline.data.manifest import Manifest
from pipeline.errors import InputError
from pipeline.models.checkpoint import load_model, save_model
from stages.cli import main


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> TinyInputs:
    return make_inputs(tmp_path_factory.mktemp("crossfit_inputs"))


def test_folds_are_balanced_deterministic_and_order_free() -> None:
    ids = [f"v{i:03d}" for i in range(103)]
    folds = video_folds(ids, 4)
    assert sorted(folds) == sorted(ids)
    sizes = np.bincount(list(folds.values()), minlength=4)
    assert sizes.max() - sizes.min() <= 1 and sizes.sum() == 103
    assert video_folds(list(reversed(ids)), 4) == folds  # a pure function of the id set
    assert video_folds(ids, 4) != video_folds(ids, 3)
    with pytest.raises(InputError, match="at least 5 train videos"):
        video_folds(ids[:4], 5)


@pytest.mark.parametrize(("folds", "fold", "message"), [
    (1, 0, "0 \\(off\\) or >= 2"), (3, 3, "0..2"), (3, -1, "0..2"), (0, 1, "needs --folds")])
def test_impossible_fold_settings_are_refused(folds: int, fold: int, message: str) -> None:
    with pytest.raises(InputError, match=message):
        check_fold(folds, fold)


def test_without_fold_drops_that_folds_train_videos_only(tiny: TinyInputs) -> None:
    manifest = Manifest.load(tiny.manifest)
    assignment = train_folds(manifest, 2)
    kept = without_fold(manifest, 2, 1)
    held = {v for v, k in assignment.items() if k == 1}
    assert set(kept.split("train").videos["video_id"]) == set(assignment) - held
    assert not set(kept.captions["video_id"]) & held
    for split in ("val", "test"):
        assert kept.split(split).captions.equals(manifest.split(split).captions)


def test_fold_teacher_trains_without_its_fold(tiny: TinyInputs, tmp_path: Path) -> None:
    out = tmp_path / "fold1"
    text = run_cli(["teacher", "train", "--name", "xclip", "--folds", "2", "--fold", "1",
                    "--options", '{"temporal_layers": 1}', "--frames", str(tiny.frames),
                    "--manifest", str(tiny.manifest), "--clip", "tiny", "--out", str(out),
                    "--device", "cpu", "--epochs", "1", "--batch-size", "4"])
    manifest = Manifest.load(tiny.manifest)
    held = {v for v, k in train_folds(manifest, 2).items() if k == 1}
    train = manifest.split("train").captions
    expected = int((~train["video_id"].isin(held)).sum())
    assert 0 < expected < len(train)
    assert f"{expected} train captions" in text
    _model, extra = load_model(out / "model.pt")
    assert (extra["folds"], extra["fold"]) == (2, 1)
    assert extra["train_config"]["folds"] == 2 and extra["train_config"]["fold"] == 1


def _fold_models(tiny: TinyInputs, root: Path) -> list[Path]:
    """Two fold 'teachers': the tiny teacher with perturbed heads, labelled fold 0 and 1 of 2."""
    base, extra = load_model(tiny.model / "model.pt")
    paths = []
    for k in range(2):
        model, _ = load_model(tiny.model / "model.pt")
        with torch.no_grad():
            for param in model.head.parameters():
                param.add_(0.2 * (k + 1) * torch.randn_like(param))
        path = root / f"fold{k}" / "model.pt"
        save_model(path, model.eval(), extra={**extra, "folds": 2, "fold": k})
        paths.append(path)
    return paths


def test_cross_fitted_rows_come_from_the_teacher_of_their_fold(tiny: TinyInputs,
                                                                tmp_path: Path) -> None:
    folds = _fold_models(tiny, tmp_path)
    crossed = tmp_path / "crossed"
    text = run_cli(score_args(tiny, crossed, "--metrics-split", "", "--fold-model",
                              str(folds[0]), "--fold-model", str(folds[1])))
    assert "cross-fitted by 2 fold teachers" in text
    alone = []
    for k, fold in enumerate(folds):
        out = tmp_path / f"alone{k}"
        run_cli([*score_args(tiny, out, "--metrics-split", ""), "--model", str(fold)])
        alone.append(read_arrays(out / "cache.h5"))
    got = read_arrays(crossed / "cache.h5")
    manifest = Manifest.load(tiny.manifest)
    assignment = train_folds(manifest, 2)
    video_of = dict(zip(manifest.captions["caption_id"], manifest.captions["video_id"],
                        strict=True))
    row_fold = np.array([assignment[video_of[c]] for c in got["caption_ids"]])
    assert set(row_fold) == {0, 1}
    for k in range(2):
        rows = row_fold == k
        for name in ("sim", "relevance", "frame_mask"):
            np.testing.assert_array_equal(got[name][rows], alone[k][name][rows])
        assert not np.array_equal(got["sim"][rows], alone[1 - k]["sim"][rows])
    with h5py.File(crossed / "cache.h5", "r") as handle:
        meta = CacheMeta.from_attrs(dict(handle.attrs))
    assert meta.cross_fit_folds == 2 and len(meta.fold_checkpoints_sha256.split(",")) == 2


def test_fold_models_in_the_wrong_order_or_unlabelled_are_refused(tiny: TinyInputs,
                                                                   tmp_path: Path) -> None:
    folds = _fold_models(tiny, tmp_path)
    for models, message in (([folds[1], folds[0]], "is fold 1 of 2"),
                            ([tiny.model / "model.pt", folds[1]], "is fold 0 of 0"),
                            ([folds[0]], "K >= 2 fold teachers")):
        out = tmp_path / "bad"
        extra = [a for m in models for a in ("--fold-model", str(m))]
        result = CliRunner().invoke(main, score_args(tiny, out, *extra))
        assert result.exit_code == 1, result.output
        assert "Error:" in result.output and message in result.output
        assert not out.exists()


def test_cross_fit_trains_folds_beside_the_teacher_and_score_finds_them(
        tiny: TinyInputs, tmp_path: Path) -> None:
    # the route dvc.yaml takes: `cross_fit: 2` in teachers.NAME, then the two stage commands
    params = tmp_path / "params.yaml"
    params.write_text(f"paths: {{teachers: {tmp_path / 'teachers'}}}\n"
                      "teachers:\n  cf:\n    kind: xclip\n    cross_fit: 2\n"
                      "    options: {temporal_layers: 1}\n    epochs: 1\n    batch_size: 4\n")
    common = ["--frames", str(tiny.frames), "--manifest", str(tiny.manifest), "--device", "cpu"]
    text = run_cli(["--params", str(params), "teacher", "train", "--name", "cf", "--clip",
                    "tiny", *common])
    model_dir = tmp_path / "teachers" / "cf" / "model"
    assert "+ 2 fold teachers" in text
    assert not (tmp_path / "teachers" / "cf" / "model.tmp").exists()
    for k in range(2):
        _model, extra = load_model(model_dir / "folds" / str(k) / "model.pt")
        assert (extra["folds"], extra["fold"]) == (2, k)
    _model, extra = load_model(model_dir / "model.pt")
    assert (extra["folds"], extra["fold"]) == (0, 0)
    run_cli(["--params", str(params), "teacher", "score", "--name", "cf", "--block-rows", "4",
             *common])
    cache = tmp_path / "teachers" / "cf" / "cache" / "cache.h5"
    with h5py.File(cache, "r") as handle:
        meta = CacheMeta.from_attrs(dict(handle.attrs))
    assert meta.cross_fit_folds == 2
    assert meta.fold_checkpoints_sha256.split(",") == [
        sha256_file(model_dir / "folds" / str(k) / "model.pt") for k in range(2)]
    assert meta.checkpoint_sha256 == sha256_file(model_dir / "model.pt")
