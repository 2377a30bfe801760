"""Checkpoints: self-describing save/load, and the official X-CLIP importer."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch

from pipeline.errors import InputError, MismatchError
from pipeline.models.checkpoint import IMPORTERS, import_official, load_model, save_model
from pipeline.models.clip import load_clip
from pipeline.models.convert import hf_state_dict_to_openai
from pipeline.models.student import Student, StudentConfig
from pipeline.models.teachers.xclip import XCLIP_MATRICES, XClipTeacher

IDS = torch.tensor([[49406, 320, 1125, 49407, 0, 0], [49406, 3306, 1002, 539, 49407, 0]])
FRAMES = torch.randn(3, 4, 3, 32, 32, generator=torch.Generator().manual_seed(3))
VMASK = torch.tensor([[1, 1, 1, 0], [1, 1, 1, 1], [1, 1, 0, 0]])


def _randomise_head(teacher: XClipTeacher) -> None:
    with torch.no_grad():
        for name in XCLIP_MATRICES:
            getattr(teacher.head, name).add_(0.1 * torch.randn_like(getattr(teacher.head, name)))


def _scores(teacher: XClipTeacher) -> torch.Tensor:
    with torch.no_grad():
        return teacher.score(
            teacher.encode_text(IDS, (IDS > 0).long()), teacher.encode_video(FRAMES, VMASK)
        )


def test_student_and_teacher_roundtrip(tmp_path: Path) -> None:
    student = Student(load_clip("tiny", seed=0), StudentConfig(temporal_layers=1)).eval()
    save_model(tmp_path / "student.pt", student, {"epoch": 3})
    again, extra = load_model(tmp_path / "student.pt")
    assert extra == {"epoch": 3} and isinstance(again, Student)
    with torch.no_grad():
        a = student.encode_video(FRAMES, VMASK).embedding
        b = again.encode_video(FRAMES, VMASK).embedding
    torch.testing.assert_close(a, b)
    assert not (tmp_path / "student.pt.tmp").exists()

    teacher = XClipTeacher(load_clip("tiny", seed=1), 6, 4, temporal_layers=1).eval()
    _randomise_head(teacher)
    save_model(tmp_path / "xclip.pt", teacher)
    loaded, _ = load_model(tmp_path / "xclip.pt")
    assert isinstance(loaded, XClipTeacher) and loaded.config_dict() == teacher.config_dict()
    torch.testing.assert_close(_scores(loaded), _scores(teacher))


def _official_layout(teacher: XClipTeacher) -> dict[str, torch.Tensor]:
    """Write a teacher in the official X-CLIP checkpoint layout (OpenAI-named ``clip.*`` ...)."""
    sd = {
        f"clip.{k}": v for k, v in hf_state_dict_to_openai(teacher.clip.model.state_dict()).items()
    }
    sd.update({name: getattr(teacher.head, name).detach().clone() for name in XCLIP_MATRICES})
    sd["frame_position_embeddings.weight"] = (
        teacher.temporal.position_embedding.weight.detach().clone()
    )
    as_text = {
        re.sub(r"^layers\.", "text_model.encoder.layers.", k): v
        for k, v in teacher.temporal.state_dict().items()
        if k.startswith("layers.")
    }
    for key, value in hf_state_dict_to_openai(as_text).items():
        sd[key.replace("transformer.resblocks.", "transformerClip.resblocks.")] = value
    return sd


def test_import_official_xclip(tmp_path: Path) -> None:
    # heads = width/64 everywhere, as the OpenAI/official code infers them from shapes.
    towers = load_clip('tiny:{"text_heads": 1, "vision_heads": 1}', seed=2)
    original = XClipTeacher(towers, 6, 4, temporal_layers=2, official_masking=True).eval()
    _randomise_head(original)
    sd = _official_layout(original)
    assert any(k.startswith("transformerClip.resblocks.1.attn.in_proj_weight") for k in sd)
    path = tmp_path / "pytorch_model.bin"
    torch.save(sd, path)
    imported = import_official("xclip", path)
    assert imported.official_masking and imported.temporal.heads == 1
    assert len(imported.temporal.layers) == 2
    torch.testing.assert_close(_scores(imported), _scores(original), rtol=1e-5, atol=1e-5)
    assert "xclip" in IMPORTERS

    with pytest.raises(MismatchError):
        import_official("xclip", path, max_words=32)
    torch.save({**sd, "mystery.weight": torch.zeros(1)}, path)
    with pytest.raises(InputError, match="mystery.weight"):
        import_official("xclip", path)
    del sd["word_mat_weight2"]
    torch.save(sd, path)
    with pytest.raises(InputError, match="word_mat_weight2"):
        import_official("xclip", path)
    with pytest.raises(InputError, match="no importer"):
        import_official("nope", path)
