"""``teachclip teacher score|train|import`` end to end on a tiny set (tiny CLIP, random frames).

What would break: the cache disagreeing with the teacher's own full-matrix score or relevance, a
resumed run recomputing finished blocks or producing different bytes, a 2-process (gloo) run
producing a cache that differs from the 1-process one, training not resuming from ``state.pt``,
an import not recording the released file's sha256.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
from click.testing import CliRunner
from student_fixtures import MAX_WORDS, F, make_frames, make_manifest

import pipeline.cache.score as scoring
import pipeline.train.fit as teacher_training  # the validation both trainings run
from pipeline.atomic import sha256_file
from pipeline.cache.reader import TeacherCache
from pipeline.cache.verify import verify
from pipeline.data.frames_store import FramesReader
from pipeline.data.manifest import Manifest
from pipeline.eval.evaluate import encode_all_texts, encode_all_videos
from pipeline.models.checkpoint import load_model, save_model
from pipeline.models.clip import load_clip
from pipeline.models.convert import hf_state_dict_to_openai
from pipeline.models.teachers import build_teacher
from pipeline.models.teachers.xclip import XCLIP_MATRICES, XClipTeacher
from pipeline.models.tokenizer import ClipTokenizer
from stages.cli import main

REPO = Path(__file__).resolve().parents[1]
BLOCK_ROWS = 4  # 16 train captions -> 4 blocks
TEACHER_SEED = 7  # the training seed the tiny teacher's checkpoint records


class SimulatedKill(Exception):
    """Raised from inside a stage to stand in for SIGKILL (click turns Ctrl-C into Abort)."""


@dataclass
class TinyInputs:
    """Manifest dir, frames.h5 and a saved teacher (model dir) for the stage commands."""

    root: Path
    manifest: Path
    frames: Path
    model: Path


def make_inputs(root: Path, seed: int = 0) -> TinyInputs:
    """8 train videos × 2 captions (+ val/test), F=4 random frames, a 1-layer tiny X-CLIP.

    The head matrices are perturbed away from identity so the cross-grained terms matter.
    """
    root.mkdir(parents=True, exist_ok=True)
    manifest = make_manifest(root)
    frames = make_frames(root / "frames.h5", list(manifest.videos["video_id"]), seed=seed,
                         short=["v01"])
    teacher = build_teacher("xclip", load_clip("tiny", seed=seed), MAX_WORDS, F,
                            temporal_layers=1)
    with torch.no_grad():
        gen = torch.Generator().manual_seed(seed)
        for name in XCLIP_MATRICES:
            param = getattr(teacher.head, name)
            param.add_(0.1 * torch.randn(param.shape, generator=gen))
    save_model(root / "model" / "model.pt", teacher.eval(),
               extra={"train_config": {"seed": TEACHER_SEED}})
    return TinyInputs(root, root / "manifest", frames.path, root / "model")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> TinyInputs:
    return make_inputs(tmp_path_factory.mktemp("teacher_inputs"))


def score_args(inp: TinyInputs, out: Path, *extra: str) -> list[str]:
    return ["teacher", "score", "--name", "xclip", "--model", str(inp.model), "--frames",
            str(inp.frames), "--manifest", str(inp.manifest), "--out", str(out),
            "--block-rows", str(BLOCK_ROWS), "--batch-size", "3", "--device", "cpu", *extra]


def run_cli(args: list[str]) -> str:
    result = CliRunner().invoke(main, args, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result.output


def read_arrays(path: Path) -> dict[str, np.ndarray]:
    """Every dataset as stored (``sim`` raw float16 through a virtual dataset if merged)."""
    with h5py.File(path, "r") as handle:
        out = {name: handle[name][()] for name in ("sim", "relevance", "frame_mask",
                                                   "caption_video", "rows_done")}
        out["caption_ids"] = handle["caption_ids"].asstr()[:]
        out["video_ids"] = handle["video_ids"].asstr()[:]
    return out


@pytest.fixture(scope="module")
def reference(tiny: TinyInputs, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An uninterrupted 1-process ``teacher score`` output directory."""
    out = tmp_path_factory.mktemp("scored") / "cache"
    text = run_cli(score_args(tiny, out))
    assert "pairs/s" in text and "R@1" in text
    return out


def test_score_matches_teacher(tiny: TinyInputs, reference: Path) -> None:
    cache_path = reference / "cache.h5"
    frames = FramesReader(tiny.frames)
    manifest = Manifest.load(tiny.manifest)
    assert verify(cache_path, frames_digest=frames.digest, manifest_digest=manifest.digest(),
                  checkpoint_path=tiny.model / "model.pt") == []
    assert sorted(p.name for p in reference.iterdir()) == ["cache.h5", "metrics.json",
                                                           "metrics.provenance.json",
                                                           "summary.json"]
    assert not Path(f"{reference}.tmp").exists()

    teacher, _ = load_model(tiny.model / "model.pt")
    items = scoring.scoring_set(manifest, frames, "train")
    ids, mask = ClipTokenizer.default().encode(items.texts, MAX_WORDS)
    cpu = torch.device("cpu")
    with torch.no_grad():
        text = encode_all_texts(teacher, np.asarray(ids), np.asarray(mask), cpu, 16)
        video = encode_all_videos(teacher, frames, items.frame_rows, cpu, 16)
        full = teacher.score(text, video).numpy()  # whole matrix at once, one call
        own = {k: v[torch.as_tensor(items.caption_video)] for k, v in video.items()}
        rel, rel_mask = teacher.relevance_logits(text, own)

    cache = TeacherCache(cache_path)
    assert cache.caption_ids == items.caption_ids and cache.video_ids == items.video_ids
    assert cache.shape == (16, 8) and cache.F == F and cache.L == MAX_WORDS
    sim, cached_rel, cached_mask = cache.batch(np.arange(16), np.arange(8))
    assert np.abs(full).max() > 1.0  # not a degenerate all-zero matrix
    np.testing.assert_allclose(sim, full, rtol=2e-3, atol=2e-3)  # float16 storage
    rel_mask = rel_mask.bool().numpy()
    np.testing.assert_array_equal(cached_mask, rel_mask)
    assert not rel_mask[items.caption_video == 1].all()  # v01 has 2 real frames of 4
    np.testing.assert_allclose(cached_rel[rel_mask], rel.numpy()[rel_mask], rtol=1e-5,
                               atol=1e-6)
    assert cache.attrs["teacher_kind"] == "xclip"
    assert cache.attrs["checkpoint_sha256"] == sha256_file(tiny.model / "model.pt")
    assert cache.attrs["frames_digest"] == frames.digest
    assert cache.attrs["official_masking"] == teacher.official_masking
    assert json.loads(cache.attrs["teacher_config_json"]) == teacher.config_dict()
    scale = float(teacher.clip.logit_scale.detach().exp())
    assert cache.attrs["logit_scale"] == pytest.approx(scale)

    metrics = json.loads((reference / "metrics.json").read_text())
    assert {"R1", "R5", "R10", "MedianR", "MeanR"} <= set(metrics)
    assert all(isinstance(v, float) for v in metrics.values())  # numbers only (dvc metrics)
    provenance = json.loads((reference / "metrics.provenance.json").read_text())
    assert provenance["role"] == "teacher" and provenance["split"] == "test"
    assert provenance["n_videos"] == 4 and provenance["model_sha256"] == sha256_file(
        tiny.model / "model.pt")
    assert Path(provenance["model_path"]) == tiny.model / "model.pt"
    assert provenance["seed"] == TEACHER_SEED and "seed" not in metrics  # provenance only


def test_killed_score_resumes_pending_blocks(tiny: TinyInputs, reference: Path,
                                             tmp_path: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    out = tmp_path / "cache"
    real = scoring._score_block
    calls: list[int] = []

    def crash_after_two(teacher, text, videos, own_cols, chunk_pairs):  # type: ignore[no-untyped-def]
        if len(calls) == 2:
            raise SimulatedKill("after 2 blocks")
        calls.append(len(own_cols))
        return real(teacher, text, videos, own_cols, chunk_pairs)

    monkeypatch.setattr(scoring, "_score_block", crash_after_two)
    with pytest.raises(SimulatedKill):
        CliRunner().invoke(main, score_args(tiny, out), catch_exceptions=False)
    assert not out.exists() and (tmp_path / "cache.tmp" / "cache.h5.tmp").is_file()

    calls.clear()
    monkeypatch.setattr(scoring, "_score_block", lambda *a: (calls.append(len(a[3])),
                                                              real(*a))[1])
    text = run_cli(score_args(tiny, out))
    assert calls == [BLOCK_ROWS, BLOCK_ROWS]  # only the 2 pending blocks of 4 are computed
    assert "2/4 blocks computed" in text
    got, want = read_arrays(out / "cache.h5"), read_arrays(reference / "cache.h5")
    for name in want:
        assert np.array_equal(got[name], want[name]), name
    assert (out / "metrics.json").read_bytes() == (reference / "metrics.json").read_bytes()


def test_two_gloo_processes_equal_one(tiny: TinyInputs, reference: Path,
                                      tmp_path: Path) -> None:
    out = tmp_path / "cache"
    env = {**os.environ, "OMP_NUM_THREADS": str(torch.get_num_threads())}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
           "-m", "stages.cli", *score_args(tiny, out)]
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "× 2 ranks" in proc.stdout
    names = sorted(p.name for p in out.iterdir())
    assert names == ["cache.h5", "cache.shard-000-of-002.h5", "cache.shard-001-of-002.h5",
                     "metrics.json", "metrics.provenance.json", "summary.json"]
    with h5py.File(out / "cache.h5", "r") as handle:
        assert handle["sim"].is_virtual and handle.attrs["layout"] == "virtual"
    assert verify(out / "cache.h5") == []
    got, want = read_arrays(out / "cache.h5"), read_arrays(reference / "cache.h5")
    for name in want:
        assert np.array_equal(got[name], want[name]), name
        assert got[name].dtype == want[name].dtype
    # The directory moves as a whole (VDS sources are relative): read it from a new place.
    moved = tmp_path / "elsewhere"
    os.replace(out, moved)
    assert np.array_equal(read_arrays(moved / "cache.h5")["sim"], want["sim"])


def _official_layout(teacher: XClipTeacher) -> dict[str, torch.Tensor]:
    """A teacher written in the official X-CLIP checkpoint layout (OpenAI-named ``clip.*``)."""
    sd = {f"clip.{k}": v
          for k, v in hf_state_dict_to_openai(teacher.clip.model.state_dict()).items()}
    sd.update({name: getattr(teacher.head, name).detach().clone() for name in XCLIP_MATRICES})
    sd["frame_position_embeddings.weight"] = teacher.temporal.position_embedding.weight.detach()
    as_text = {re.sub(r"^layers\.", "text_model.encoder.layers.", k): v
               for k, v in teacher.temporal.state_dict().items() if k.startswith("layers.")}
    for key, value in hf_state_dict_to_openai(as_text).items():
        sd[key.replace("transformer.resblocks.", "transformerClip.resblocks.")] = value
    return sd


def test_import_records_sha256(tmp_path: Path) -> None:
    towers = load_clip('tiny:{"text_heads": 1, "vision_heads": 1}', seed=2)
    original = XClipTeacher(towers, 6, 4, temporal_layers=1, official_masking=True).eval()
    released = tmp_path / "msrvtt_xclip_model.bin"
    torch.save(_official_layout(original), released)
    out = tmp_path / "imported"
    text = run_cli(["teacher", "import", "xclip", str(released), "--out", str(out),
                    "--max-frames", "4"])
    summary = json.loads((out / "summary.json").read_text())
    assert summary["source_sha256"] == sha256_file(released) and summary["source_sha256"] in text
    assert summary["kind"] == "xclip" and summary["official_masking"] is True
    assert summary["source_path"] == str(released)
    assert summary["model_sha256"] == sha256_file(out / "model.pt")
    model, extra = load_model(out / "model.pt")
    assert isinstance(model, XClipTeacher) and model.max_words == 6
    assert extra["imported"]["source_sha256"] == summary["source_sha256"]
    torch.testing.assert_close(model.head.word_logit_weight, original.head.word_logit_weight)

    bad = CliRunner().invoke(main, ["teacher", "import", "xclip", str(released), "--out",
                                    str(tmp_path / "x"), "--max-frames", "12"])
    assert bad.exit_code == 1 and "Error:" in bad.output


def test_train_writes_model_and_resumes(tiny: TinyInputs, tmp_path: Path,
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    out = tmp_path / "model"
    params = tmp_path / "params.yaml"
    params.write_text("teachers:\n  tx:\n    kind: xclip\n    options: {temporal_layers: 1}\n"
                      "    epochs: 2\n    batch_size: 8\n    lr: 0.001\n")
    args = ["--params", str(params), "teacher", "train", "--name", "tx", "--frames",
            str(tiny.frames), "--manifest", str(tiny.manifest), "--clip", "tiny", "--out",
            str(out), "--device", "cpu", "--eval-batch-size", "8", "--log-every", "1"]
    real = teacher_training.evaluate_retrieval
    evals: list[int] = []

    def crash_in_second_validation(*a, **k):  # type: ignore[no-untyped-def]
        evals.append(1)
        if len(evals) == 2:
            raise SimulatedKill("during epoch 2")
        return real(*a, **k)

    monkeypatch.setattr(teacher_training, "evaluate_retrieval", crash_in_second_validation)
    with pytest.raises(SimulatedKill):
        CliRunner().invoke(main, args, catch_exceptions=False)
    work = tmp_path / "model.tmp"
    assert (work / "state.pt").is_file() and not out.exists()
    assert torch.load(work / "state.pt", weights_only=False)["epoch"] == 1

    monkeypatch.setattr(teacher_training, "evaluate_retrieval", real)
    text = run_cli(args)
    assert "resumed from epoch 1" in text
    assert not work.exists()
    assert sorted(p.name for p in out.iterdir()) == ["model.pt", "summary.json",
                                                     "train_log.tsv", "val_log.tsv"]
    model, extra = load_model(out / "model.pt")
    assert isinstance(model, XClipTeacher) and len(model.temporal.layers) == 1
    assert extra["train_config"]["optim"]["epochs"] == 2 and extra["role"] == "teacher"
    val = (out / "val_log.tsv").read_text().splitlines()
    assert val[0].split("\t")[0] == "epoch" and [r.split("\t")[0] for r in val[1:]] == ["0", "1"]
    train_rows = (out / "train_log.tsv").read_text().splitlines()[1:]
    assert len(train_rows) == 4  # 16 captions / batch 8 = 2 steps × 2 epochs
    summary = json.loads((out / "summary.json").read_text())
    assert summary["resumed_from_epoch"] == 1 and summary["steps"] == 4
    assert summary["model_sha256"] == sha256_file(out / "model.pt")


# ------------------------------------------------------------------ cache show (+ --sheet)
def test_cache_show_relevance_and_student_weights(tiny: TinyInputs, reference: Path,
                                                  tmp_path: Path) -> None:
    from pipeline.eval.sheets import SERIES_COLOURS
    from pipeline.models.preprocess import normalize_frames
    from pipeline.models.student import Student, StudentConfig
    from tests.picture_checks import assert_picture, colour_fraction

    student_dir = tmp_path / "student"
    student = Student(load_clip("tiny", seed=3))
    save_model(student_dir / "model.pt", student, extra={"train_config": {"max_words": 32}})
    cache_path = reference / "cache.h5"
    sheet = tmp_path / "relevance.png"
    args = ["cache", "show", str(cache_path), "v01_c1", "--frames", str(tiny.frames),
            "--manifest", str(tiny.manifest), "--student", str(student_dir), "--device", "cpu"]
    result = CliRunner().invoke(main, [*args, "--json", "--sheet", str(sheet)])
    assert result.exit_code == 0, result.output
    shown = json.loads(result.stdout)
    assert shown["video_id"] == "v01" and shown["text"].startswith("a green square")
    with h5py.File(cache_path, "r") as handle:  # independent reading of the stored soft labels
        row = list(handle["caption_ids"].asstr()[:]).index("v01_c1")
        logits, mask = handle["relevance"][row], handle["frame_mask"][row]
        sim_row = handle["sim"][row].astype(np.float32)
    assert shown["mask"] == mask.tolist() == [True, True, False, False]  # v01 is short
    expected = np.where(mask, np.exp(logits - logits[mask].max()), 0.0)
    teacher_r, student_w = shown["series"].values()
    np.testing.assert_allclose(teacher_r, expected / expected.sum(), atol=1e-5)
    assert shown["own_rank"] == int((sim_row >= sim_row[1]).sum())  # v01 is column 1
    frames = FramesReader(tiny.frames)
    pixels, fmask = frames.read([frames.row_of("v01")])
    with torch.no_grad():
        ref = student.encode_video(normalize_frames(torch.from_numpy(pixels),
                                                    torch.from_numpy(fmask)),
                                   torch.from_numpy(fmask)).frame_weights[0]
    np.testing.assert_allclose(student_w, ref.numpy(), atol=1e-5)
    image = assert_picture(sheet, min_width=500, min_height=300)
    for colour in SERIES_COLOURS[:2]:  # teacher and student bars are both drawn
        rgb = tuple(int(colour[i:i + 2], 16) / 255 for i in (1, 3, 5))
        assert colour_fraction(image, rgb) > 0.002, colour
    text = run_cli(args[:4] + ["--frames", str(tiny.frames)])
    assert "rank" in text and "pad" in text and f"{teacher_r[0]:.3f}" in text

    mean_dir = tmp_path / "meanp"
    save_model(mean_dir / "model.pt", Student(load_clip("tiny"), StudentConfig(
        temporal="meanP", aggregation="mean")), extra={"train_config": {"max_words": 32}})
    for bad, message in (
        (["cache", "show", str(cache_path), "nope"], "'nope'"),
        (["cache", "show", str(cache_path), "v01_c1", "--sheet", str(tmp_path / "s.png")],
         "--frames"),
        ([*args[:6], "--student", str(mean_dir), "--device", "cpu"], "AFA"),
    ):
        result = CliRunner().invoke(main, bad)
        assert result.exit_code == 1 and "Error: " in result.output, result.output
        assert message in result.output, result.output
    other = make_frames(tmp_path / "other.h5", list(Manifest.load(tiny.manifest).videos[
        "video_id"]), seed=9)
    result = CliRunner().invoke(main, [*args[:4], "--frames", str(other.path)])
    assert result.exit_code == 1 and "frames digest" in result.output
