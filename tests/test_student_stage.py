"""``teachclip student train``: outputs, params runs, exact resume after a kill, cache refusals."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import yaml
from click.testing import CliRunner

from pipeline.data.frames_store import FramesReader
from pipeline.distributed import DistInfo
from pipeline.errors import InputError
from pipeline.models.checkpoint import load_model
from pipeline.train.setup import OptimConfig
from pipeline.train.student import StudentTrainConfig
from pipeline.train.student_run import run_student
from stages.cli import main
from tests.student_fixtures import make_cache, make_frames, make_manifest


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> dict:
    root = tmp_path_factory.mktemp("student")
    manifest = make_manifest(root)
    frames = make_frames(root / "frames.h5", list(manifest.videos["video_id"]))
    cache = make_cache(root / "xclip.h5", manifest, frames)
    cache2 = make_cache(root / "ts2net.h5", manifest, frames, seed=1)
    return {"root": root, "manifest": manifest, "frames": frames, "cache": cache,
            "cache2": cache2}


def _base_args(world: dict, out: Path) -> list[str]:
    return ["student", "train", "--out", str(out), "--frames", str(world["root"] / "frames.h5"),
            "--manifest", str(world["root"] / "manifest"), "--device", "cpu",
            "--batch-size", "8", "--log-every", "1"]


def test_train_from_params_run_with_two_caches(world: dict, tmp_path: Path) -> None:
    # students name their teachers; the caches are where `teacher score` publishes them
    teachers = tmp_path / "teachers"
    for name, cache in (("xclip", world["cache"]), ("ts2net", world["cache2"])):
        (teachers / name / "cache").mkdir(parents=True)
        (teachers / name / "cache" / "cache.h5").symlink_to(Path(cache).resolve())
    params = {"paths": {"teachers": str(teachers)},
              "students": {"two": {"teachers": ["xclip", "ts2net"],
                                   "epochs": 1, "coarse": "ce", "seed": 3}}}
    params_file = tmp_path / "params.yaml"
    params_file.write_text(yaml.safe_dump(params))
    out = tmp_path / "two"
    result = CliRunner().invoke(
        main, ["--params", str(params_file), *_base_args(world, out), "--name", "two",
               "--seed", "5", "--clip", "tiny"])
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in out.iterdir()) == ["model.pt", "summary.json",
                                                     "train_log.tsv", "val_log.tsv"]
    assert not Path(str(out) + ".tmp").exists()
    model, extra = load_model(out / "model.pt")
    assert extra["role"] == "student" and len(extra["teachers"]) == 2
    config = extra["train_config"]
    assert config["coarse"] == "ce" and config["optim"]["epochs"] == 1  # from params
    assert config["seed"] == 5  # the command line wins over params
    header = (out / "train_log.tsv").read_text().splitlines()[0].split("\t")
    for column in ("step", "lr", "gt", "coarse", "fine", "clips_per_s"):
        assert column in header
    rows = (out / "train_log.tsv").read_text().splitlines()[1:]
    assert len(rows) == 2 and float(rows[0].split("\t")[header.index("coarse")]) > 0
    assert len((out / "val_log.tsv").read_text().splitlines()) == 2


def test_baseline_without_cache(world: dict, tmp_path: Path) -> None:
    out = tmp_path / "base"
    result = CliRunner().invoke(main, [*_base_args(world, out), "--epochs", "1",
                                       "--temporal", "meanP", "--aggregation", "mean"])
    assert result.exit_code == 0, result.output
    model, extra = load_model(out / "model.pt")
    assert extra["role"] == "baseline" and model.afa is None and model.temporal is None
    rows = (out / "train_log.tsv").read_text().splitlines()
    header = rows[0].split("\t")
    assert float(rows[1].split("\t")[header.index("coarse")]) == 0.0


def _config(**overrides) -> StudentTrainConfig:
    return StudentTrainConfig(optim=OptimConfig(epochs=2, batch_size=8), log_every=1,
                              **{"seed": 7, **overrides})


def _run(world: dict, out: Path, on_progress=None, **overrides):
    frames = FramesReader(world["frames"].path)  # in_memory must not leak between runs
    return run_student(config=_config(**overrides), manifest=world["manifest"], frames=frames,
                       cache_paths=[world["cache"]], out_dir=out, device=torch.device("cpu"),
                       dist_info=DistInfo(), eval_split="", on_progress=on_progress)


def test_resume_after_kill_equals_uninterrupted(world: dict, tmp_path: Path) -> None:
    straight = _run(world, tmp_path / "a")
    steps = {"n": 0}

    def kill_in_second_epoch(n: int) -> None:
        steps["n"] += n
        if steps["n"] == 3:  # 2 steps per epoch: the first step of epoch 2
            raise KeyboardInterrupt("simulated kill")

    with pytest.raises(KeyboardInterrupt):
        _run(world, tmp_path / "b", kill_in_second_epoch)
    assert (tmp_path / "b.tmp" / "state.pt").exists() and not (tmp_path / "b").exists()
    with pytest.raises(InputError, match="different settings"):
        _run(world, tmp_path / "b", seed=8)
    resumed = _run(world, tmp_path / "b", in_memory=True)  # speed options may change
    assert resumed.resumed_from_epoch == 1 and straight.resumed_from_epoch == 0
    a, _ = load_model(tmp_path / "a" / "model.pt")
    b, _ = load_model(tmp_path / "b" / "model.pt")
    for (name, p), q in zip(a.state_dict().items(), b.state_dict().values(), strict=True):
        assert torch.equal(p, q), name
    log = lambda d: [r.split("\t")[:7] for r in (d / "train_log.tsv").read_text().splitlines()]  # noqa: E731
    assert log(tmp_path / "a") == log(tmp_path / "b")  # step, epoch, lr, total, gt, coarse, fine


@pytest.mark.parametrize("case", ["frames", "caption", "digest"])
def test_incompatible_cache_is_refused(world: dict, tmp_path: Path, case: str) -> None:
    bad = tmp_path / "bad.h5"
    if case == "frames":
        make_cache(bad, world["manifest"], world["frames"], max_frames=3)
        expected = ["max_frames (F)", "4", "3"]
    elif case == "caption":
        make_cache(bad, world["manifest"], world["frames"], drop_caption="v03_c1")
        expected = ["caption id", "v03_c1"]
    else:
        make_cache(bad, world["manifest"], world["frames"], frames_digest="f" * 16)
        expected = ["frames digest", world["frames"].digest, "f" * 16]
    out = tmp_path / "never"
    result = CliRunner().invoke(main, [*_base_args(world, out), "--epochs", "1",
                                       "--cache", str(bad)])
    assert result.exit_code == 1
    for text in expected:
        assert text in result.output
    assert not out.exists() and not Path(str(out) + ".tmp").exists()  # refused before training


def test_same_seed_same_weights_with_a_pretrained_clip_directory(world: dict,
                                                                 tmp_path: Path) -> None:
    """New layers (AFA, seqTransf position table) are seeded even when the CLIP is a directory
    (no ``tiny`` seed): two runs with one seed give identical weights; another seed does not."""
    from pipeline.models.clip import load_clip

    load_clip("tiny", seed=3).model.save_pretrained(tmp_path / "clip")
    torch.manual_seed(1)  # different global RNG states before each run must not matter
    first = _run(world, tmp_path / "a", clip=str(tmp_path / "clip"))
    torch.manual_seed(2)
    _run(world, tmp_path / "b", clip=str(tmp_path / "clip"))
    _run(world, tmp_path / "c", clip=str(tmp_path / "clip"), seed=8)
    assert first.resumed_from_epoch == 0
    a, _ = load_model(tmp_path / "a" / "model.pt")
    b, _ = load_model(tmp_path / "b" / "model.pt")
    c, _ = load_model(tmp_path / "c" / "model.pt")
    for (name, p), q in zip(a.state_dict().items(), b.state_dict().values(), strict=True):
        assert torch.equal(p, q), name
    assert not torch.equal(a.afa.frame_linear.weight, c.afa.frame_linear.weight)


def test_relevance_temperature_divides_the_cached_relevance_logits(world: dict,
                                                                   tmp_path: Path) -> None:
    # reading a cache at temperature T trains exactly like reading one whose stored relevance
    # logits are already divided by T: the knob touches the fine target and nothing else
    sharp = make_cache(tmp_path / "sharp.h5", world["manifest"], world["frames"],
                       relevance_scale=4.0)
    frames = FramesReader(world["frames"].path)

    def run(out: str, cache: Path, temperature: float) -> dict[str, torch.Tensor]:
        run_student(config=_config(relevance_temperature=temperature), manifest=world["manifest"],
                    frames=frames, cache_paths=[cache], out_dir=tmp_path / out,
                    device=torch.device("cpu"), dist_info=DistInfo(), eval_split="")
        model, extra = load_model(tmp_path / out / "model.pt")
        assert extra["train_config"]["relevance_temperature"] == temperature
        return model.state_dict()

    at_quarter = run("quarter", world["cache"], 0.25)
    pre_divided = run("divided", sharp, 1.0)
    official = run("official", world["cache"], 1.0)
    assert all(torch.allclose(at_quarter[k], pre_divided[k], atol=1e-6) for k in at_quarter)
    assert any(not torch.allclose(at_quarter[k], official[k], atol=1e-4) for k in at_quarter)


@pytest.mark.parametrize("temperature", ["0", "-1"])
def test_relevance_temperature_must_be_positive(world: dict, tmp_path: Path,
                                                temperature: str) -> None:
    out = tmp_path / "bad"
    result = CliRunner().invoke(main, [*_base_args(world, out), "--epochs", "1", "--cache",
                                       str(world["cache"]), "--relevance-temperature",
                                       temperature])
    assert result.exit_code == 1
    assert "Error:" in result.output and "--relevance-temperature must be > 0" in result.output
    assert not out.exists()
