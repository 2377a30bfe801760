"""Golden check against numbers produced by the official TeachCLIP code (student AFA, X-CLIP).

Runs the project's own modules (``AFA``/``Student``, ``XClipHead``, ``XClipTeacher`` relevance) in
float64 on the stored inputs. Shape-agnostic: every size is read from the arrays.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from pipeline.models.clip import ClipTowers, load_clip
from pipeline.models.student import Student, StudentConfig, student_logits
from pipeline.models.teachers.base import masked_softmax
from pipeline.models.teachers.xclip import (
    XCLIP_MATRICES,
    XClipHead,
    XClipTeacher,
    masked_mean_normalized,
)

REPO = Path(__file__).resolve().parent.parent
GOLDEN = Path(os.environ.get("TEACHCLIP_GOLDEN", REPO / "tests" / "data" / "official_golden.npz"))
RTOL, ATOL = 1e-6, 1e-9


@pytest.fixture(scope="module")
def golden() -> dict[str, torch.Tensor]:
    if not GOLDEN.exists():
        pytest.skip(f"golden file {GOLDEN} not found")
    with np.load(GOLDEN) as data:
        return {k: torch.from_numpy(np.asarray(data[k], dtype=np.float64)) for k in data.files}


def _towers(dim: int, logit_scale: torch.Tensor) -> ClipTowers:
    """A tiny real CLIP with projection width ``dim`` and the golden λ (towers are not run)."""
    towers = load_clip(f'tiny:{{"projection_dim": {dim}}}', seed=0)
    with torch.no_grad():
        towers.logit_scale.copy_(logit_scale)
    return towers


def _student(golden: dict[str, torch.Tensor], aggregation: str) -> Student:
    towers = _towers(golden["afa_frames"].shape[-1], golden["afa_logit_scale"])
    config = StudentConfig(temporal="meanP", aggregation=aggregation)  # type: ignore[arg-type]
    student = Student(towers, config).double()
    if student.afa is not None:
        with torch.no_grad():
            student.afa.frame_linear.weight.copy_(golden["afa_w1"])
            student.afa.frame_linear.bias.copy_(golden["afa_b1"])
            student.afa.frame_linear2.weight.copy_(golden["afa_w2"])
            student.afa.frame_linear2.bias.copy_(golden["afa_b2"])
    return student


def _close(found: torch.Tensor, expected: torch.Tensor) -> None:
    assert found.shape == expected.shape
    np.testing.assert_allclose(found.detach().numpy(), expected.numpy(), rtol=RTOL, atol=ATOL)


@pytest.mark.parametrize("with_mask", [False, True])
def test_afa_weights_and_logits(golden: dict[str, torch.Tensor], with_mask: bool) -> None:
    y = golden["afa_frames"]
    mask = torch.ones(y.shape[:2], dtype=y.dtype) if with_mask else None
    student = _student(golden, "afa")
    out = student.video_from_features(y, mask)
    _close(out.frame_weights, golden["afa_weights"])
    logits = student_logits(golden["afa_text"], out.embedding, student.clip.logit_scale)
    _close(logits, golden["afa_logits"])


def test_meanp_logits(golden: dict[str, torch.Tensor]) -> None:
    y = golden["afa_frames"]
    student = _student(golden, "mean")
    out = student.video_from_features(y, torch.ones(y.shape[:2], dtype=y.dtype))
    assert out.frame_weights is None
    logits = student_logits(golden["afa_text"], out.embedding, student.clip.logit_scale)
    _close(logits, golden["meanp_logits"])


def _head(golden: dict[str, torch.Tensor]) -> XClipHead:
    dim = golden["xclip_sentence"].shape[-1]
    words = golden["xclip_words"].shape[1]
    frames = golden["xclip_frames"].shape[1]
    head = XClipHead(dim, words, frames).double()
    with torch.no_grad():
        for name in XCLIP_MATRICES:
            getattr(head, name).copy_(golden[f"xclip_{name}"])
    return head


@pytest.mark.parametrize("official", [True, False])
@pytest.mark.parametrize("chunk_pairs", [1, 5, 10_000])
def test_xclip_logits(golden: dict[str, torch.Tensor], official: bool, chunk_pairs: int) -> None:
    head = _head(golden)
    s, w, x = golden["xclip_sentence"], golden["xclip_words"], golden["xclip_frames"]
    word_mask = None if official else torch.ones(w.shape[:2], dtype=w.dtype)
    frame_mask = None if official else torch.ones(x.shape[:2], dtype=x.dtype)
    video = masked_mean_normalized(x, frame_mask)  # y = x: no temporal module
    logits = head.score(
        s, w, word_mask, video, x, frame_mask, golden["xclip_logit_scale"].exp(), chunk_pairs
    )
    _close(logits, golden["xclip_logits"])


@pytest.mark.parametrize("official", [True, False])
def test_xclip_relevance(golden: dict[str, torch.Tensor], official: bool) -> None:
    """R = softmax_f(ŝ_i·f̂_{i,f}) for the positive pairs (the first Bt videos)."""
    s, x = golden["xclip_sentence"], golden["xclip_frames"][: golden["xclip_sentence"].shape[0]]
    towers = _towers(s.shape[-1], golden["xclip_logit_scale"])
    teacher = XClipTeacher(
        towers, golden["xclip_words"].shape[1], x.shape[1], official_masking=official
    ).double()
    text = {"sentence": F.normalize(s, dim=-1)}
    video = {"frames": x, "frame_mask": torch.ones(x.shape[:2], dtype=x.dtype)}
    logits, mask = teacher.relevance_logits(text, video)
    _close(masked_softmax(logits, mask), golden["xclip_relevance"])
