"""``teachclip student import``: a student saved by the official TeachCLIP train.py, converted
into our format, gives the same embeddings and metrics as the original, and bad files are
reported with the file and the key."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from pipeline.errors import InputError
from pipeline.eval.metrics_file import read_metrics_files
from pipeline.models.checkpoint import load_model, save_model
from pipeline.models.clip import load_clip
from pipeline.models.convert import hf_state_dict_to_openai, openai_state_dict_to_hf
from pipeline.models.official_student import (
    import_official_student,
    import_student,
    official_student_from_state,
)
from pipeline.models.student import Student, StudentConfig, student_logits
from stages.cli import main
from tests.student_fixtures import MAX_WORDS, make_frames, make_manifest

REPO = Path(__file__).resolve().parents[1]
GOLDEN = Path(os.environ.get("TEACHCLIP_GOLDEN", REPO / "tests" / "data" / "official_golden.npz"))
# Heads = width/64, as the official code infers them from the shapes.
TINY = 'tiny:{"text_heads": 1, "vision_heads": 1}'
IDS = torch.tensor([[49406, 320, 1125, 49407, 0, 0], [49406, 3306, 1002, 539, 49407, 0]])
FRAMES = torch.randn(3, 4, 3, 32, 32, generator=torch.Generator().manual_seed(3))
VMASK = torch.ones(3, 4)

#: Which OpenAI-named CLIP tensors the official ``convert_weights`` stores in fp16: weights and
#: biases of Linear/Conv layers and attention, and the two projection matrices.
_FP16 = re.compile(r"(attn\.(in_proj_|out_proj\.)|mlp\.c_(fc|proj)\.|conv1\.)|"
                   r"^(text_projection|visual\.proj)$")


def _official_clip(student: Student) -> dict[str, torch.Tensor]:
    """``clip.*`` as the official model holds it (OpenAI names, fp16 where it converts), and
    the student's own CLIP rounded the same way so both hold identical values."""
    openai = hf_state_dict_to_openai(student.clip.model.state_dict())
    openai = {k: v.half() if _FP16.search(k) else v.float() for k, v in openai.items()}
    _, rounded = openai_state_dict_to_hf(openai)
    student.clip.model.load_state_dict(rounded, strict=False)
    return {f"clip.{k}": v for k, v in openai.items()}


def official_layout(student: Student) -> dict[str, torch.Tensor]:
    """Write ``student`` as ``torch.save(CLIP4Clip.state_dict())`` of the official code does."""
    sd = _official_clip(student)
    if student.temporal is not None:
        sd["frame_position_embeddings.weight"] = \
            student.temporal.position_embedding.weight.detach().clone()
        as_text = {re.sub(r"^layers\.", "text_model.encoder.layers.", k): v
                   for k, v in student.temporal.state_dict().items() if k.startswith("layers.")}
        for key, value in hf_state_dict_to_openai(as_text).items():
            sd[key.replace("transformer.resblocks.", "transformerClip.resblocks.")] = value
    afa = student.afa
    assert afa is not None
    for theirs, layer in (("frameLinear", afa.frame_linear), ("frameLinear2", afa.frame_linear2)):
        sd[f"{theirs}.weight"] = layer.weight.detach().clone()
        sd[f"{theirs}.bias"] = layer.bias.detach().clone()
    return sd


def trained_like_student(layers: int = 2, seed: int = 0) -> Student:
    """A tiny seqTransf+AFA student with every non-CLIP weight perturbed (no symmetric init)."""
    torch.manual_seed(seed)
    student = Student(load_clip(TINY, seed=seed), StudentConfig(temporal_layers=layers))
    with torch.no_grad():
        for name, p in student.named_parameters():
            if not name.startswith("clip."):
                p.add_(0.2 * torch.randn_like(p))
    return student.eval()


def _outputs(student: Student) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    with torch.no_grad():
        video = student.encode_video(FRAMES, VMASK)
        text = student.encode_text(IDS, (IDS > 0).long())
        logits = student_logits(text, video.embedding, student.clip.logit_scale)
        return video.embedding, video.frame_weights, logits


def test_official_layout_imports_to_the_same_student(tmp_path: Path) -> None:
    original = trained_like_student()
    state = official_layout(original)
    assert state["clip.text_projection"].dtype == torch.float16
    assert state["clip.visual.transformer.resblocks.0.attn.in_proj_weight"].dtype == torch.float16
    assert "transformerClip.resblocks.1.mlp.c_fc.weight" in state
    path = tmp_path / "pytorch_model.bin.4"
    torch.save({f"module.{k}": v for k, v in state.items()}, path)  # saved from DDP
    imported = import_official_student(path)
    assert imported.config.temporal == "seqTransf" and imported.config.temporal_layers == 2
    assert imported.temporal is not None and imported.temporal.heads == 1
    for got, want in zip(_outputs(imported), _outputs(original), strict=True):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)
    assert all(p.dtype == torch.float32 for p in imported.parameters())


def test_meanp_student_reproduces_official_afa_numbers() -> None:
    """A meanP student in the official layout, carrying the golden AFA weights and λ: the
    imported model's AFA path gives the official logits and frame weights."""
    with np.load(GOLDEN) as data:
        g = {k: torch.from_numpy(np.asarray(data[k], dtype=np.float64)) for k in data.files}
    dim = g["afa_frames"].shape[-1]
    towers = load_clip(f'tiny:{{"text_heads": 1, "vision_heads": 1, "projection_dim": {dim}}}')
    with torch.no_grad():
        towers.logit_scale.copy_(g["afa_logit_scale"])
    student = Student(towers, StudentConfig(temporal="meanP"))
    state = official_layout(student)
    state.update({"frameLinear.weight": g["afa_w1"], "frameLinear.bias": g["afa_b1"],
                  "frameLinear2.weight": g["afa_w2"], "frameLinear2.bias": g["afa_b2"]})
    imported = official_student_from_state(state).double()
    assert imported.config.temporal == "meanP" and imported.temporal is None
    with torch.no_grad():
        video = imported.video_from_features(g["afa_frames"], None)
        logits = student_logits(g["afa_text"], video.embedding, imported.clip.logit_scale)
    np.testing.assert_allclose(video.frame_weights.numpy(), g["afa_weights"].numpy(), rtol=1e-6)
    np.testing.assert_allclose(logits.numpy(), g["afa_logits"].numpy(), rtol=1e-6)


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> dict:
    root = tmp_path_factory.mktemp("student_import")
    manifest = make_manifest(root, n_train=2, n_val=1, n_test=5, captions_per_video=3)
    make_frames(root / "frames.h5", list(manifest.videos["video_id"]))
    original = trained_like_student(layers=1, seed=4)
    torch.save(official_layout(original), root / "pytorch_model.bin.2")
    (root / "original").mkdir()
    save_model(root / "original" / "model.pt", original,
               extra={"train_config": {"max_words": MAX_WORDS}, "role": "student"})
    return {"root": root, "original": original}


def _evaluate(root: Path, model: Path, out: Path):
    return CliRunner().invoke(main, ["evaluate", "--model", str(model), "--frames",
                                     str(root / "frames.h5"), "--manifest",
                                     str(root / "manifest"), "--out", str(out),
                                     "--device", "cpu"])


def test_cli_import_then_evaluate_index_search_like_the_original(world: dict) -> None:
    root = world["root"]
    out = root / "imported"
    result = CliRunner().invoke(main, ["student", "import", str(root / "pytorch_model.bin.2"),
                                       "--out", str(out), "--name", "official-run"])
    assert result.exit_code == 0, result.output
    assert "seqTransf x1 + AFA" in result.output
    summary = json.loads((out / "summary.json").read_text())
    assert summary["role"] == "student" and summary["source"] == "imported"
    assert summary["max_words"] == MAX_WORDS and len(summary["source_sha256"]) == 64
    model, extra = load_model(out / "model.pt")
    assert isinstance(model, Student) and extra["name"] == "official-run"
    assert not (root / "imported.tmp").exists()

    for name in ("imported", "original"):
        result = _evaluate(root, root / name, root / f"{name}.json")
        assert result.exit_code == 0, result.output
    # numbers and provenance live in two files; read them back together
    got = read_metrics_files(root / "imported.json")
    want = read_metrics_files(root / "original.json")
    assert got["kind"] == "student" and got["role"] == "student"
    assert got["model"] == "official-run" and got["n_queries"] == 15
    for key in ("R1", "R5", "R10", "MedianR", "MeanR", "v2t_R1", "v2t_MeanR"):
        assert got[key] == pytest.approx(want[key]), key

    hits = {}
    for name in ("imported", "original"):
        index = root / f"{name}.h5"
        result = CliRunner().invoke(main, ["index", "--model", str(root / name), "--frames",
                                           str(root / "frames.h5"), "--out", str(index),
                                           "--device", "cpu"])
        assert result.exit_code == 0, result.output
        result = CliRunner().invoke(main, ["search", "a red square moving", "--index",
                                           str(index), "--model", str(root / name), "--json",
                                           "--top-k", "3", "--device", "cpu"])
        assert result.exit_code == 0, result.output
        hits[name] = json.loads(result.output)
    assert [h["video_id"] for h in hits["imported"]] == [h["video_id"] for h in hits["original"]]
    assert len(hits["imported"]) == 3
    for a, b in zip(hits["imported"], hits["original"], strict=True):
        assert a["score"] == pytest.approx(b["score"], abs=1e-5)


def _cli_error(args: list[str]) -> str:
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 1, result.output
    assert result.output.startswith("Error: ")
    return result.output


def test_bad_checkpoints_name_the_file_and_the_problem(world: dict, tmp_path: Path) -> None:
    state = official_layout(trained_like_student(layers=1, seed=4))
    cases = {
        "missing": ({k: v for k, v in state.items() if k != "frameLinear2.bias"},
                    "frameLinear2.bias"),
        "unknown": ({**state, "lstm_visual.weight_ih_l0": torch.zeros(1)},
                    "lstm_visual.weight_ih_l0"),
        "teacher": ({**state, "word_logit_weight": torch.eye(4)}, "word_logit_weight"),
        "conv3d": ({**state, "clip.visual.conv2.weight": torch.zeros(1)}, "3d"),
    }
    for label, (sd, key) in cases.items():
        path = tmp_path / f"{label}.bin"
        torch.save(sd, path)
        message = _cli_error(["student", "import", str(path), "--out", str(tmp_path / label)])
        assert str(path) in message and key in message, label
        assert not (tmp_path / label).exists()
    garbage = tmp_path / "garbage.bin"
    garbage.write_bytes(b"not a checkpoint")
    assert str(garbage) in _cli_error(["student", "import", str(garbage), "--out",
                                       str(tmp_path / "g")])
    good = world["root"] / "pytorch_model.bin.2"
    assert "max_words" in _cli_error(["student", "import", str(good), "--out",
                                      str(tmp_path / "w"), "--max-words", "1"])
    assert "afa_temperature" in _cli_error(["student", "import", str(good), "--out",
                                            str(tmp_path / "t"), "--afa-temperature", "0"])
    with pytest.raises(InputError, match="checkpoint not found"):
        import_student(tmp_path / "nope.bin", tmp_path / "n")
