"""Student (CLIP4Clip + seqTransf + AFA), seqTransf and pixel normalisation."""

from __future__ import annotations

import math

import pytest
import torch

from pipeline.models.clip import MAX_LOGIT_SCALE, load_clip
from pipeline.models.preprocess import CLIP_MEAN, CLIP_STD, normalize_frames
from pipeline.models.student import Student, StudentConfig, student_logits
from pipeline.models.temporal import TemporalTransformer
from pipeline.train.student import StudentStep


def _student(**config: object) -> Student:
    return Student(load_clip("tiny", seed=0), StudentConfig(**config))  # type: ignore[arg-type]


def test_forward_backward_reaches_every_trainable_param() -> None:
    student = _student(temporal_layers=2).train()
    frozen = {f"clip.model.{n}" for n in student.clip.freeze_per_spec()}
    ids = torch.tensor([[49406, 320, 1125, 49407, 0], [49406, 3306, 1002, 49407, 0]])
    frames = torch.randn(2, 3, 3, 32, 32)
    vmask = torch.tensor([[1, 1, 0], [1, 1, 1]])
    # the training path: StudentStep's features, then the logits training computes
    sentence, embedding, weights = StudentStep(student)(ids, (ids > 0).long(), frames, vmask)
    logits = student_logits(sentence, embedding, student.clip.logit_scale)
    assert logits.shape == (2, 2) and weights is not None
    # Also use the T=1 weights, as the fine distillation loss does.
    loss = (
        torch.nn.functional.cross_entropy(logits, torch.arange(2)) - weights[:, 0].sum()
    )
    loss.backward()
    for name, p in student.named_parameters():
        if name in frozen:
            assert p.grad is None, name
        elif name == "afa.frame_linear2.bias":
            # A constant shift of w: every softmax over frames is invariant, so its gradient is 0.
            # (exactly 0 in exact arithmetic; float32 rounding can leave ~1e-8)
            assert p.grad is not None and p.grad.abs().sum() < 1e-6
        else:
            assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_param_groups_and_clamp() -> None:
    student = _student(temporal_layers=2)
    student.clip.freeze_per_spec()
    groups = student.param_groups(lr=1e-4, coef_lr=1e-3, afa_lr_multiplier=10, weight_decay=0.2)
    by_name = {g["name"]: g for g in groups}
    assert by_name["clip_decay"]["lr"] == pytest.approx(1e-7)
    assert by_name["new_decay"]["lr"] == pytest.approx(1e-4)
    assert by_name["afa_decay"]["lr"] == pytest.approx(1e-3)
    assert by_name["afa_no_decay"]["weight_decay"] == 0.0
    names = {id(p): n for n, p in student.named_parameters()}
    for group in groups:
        for p in group["params"]:
            n = names[id(p)]
            decays = group["weight_decay"] > 0
            nodecay_name = (
                n.endswith("bias") or "norm" in n or "logit_scale" in n or "embedding" in n
            )
            assert decays != nodecay_name, n
    placed = sorted(id(p) for g in groups for p in g["params"])
    assert placed == sorted(id(p) for p in student.parameters() if p.requires_grad)
    with torch.no_grad():
        student.clip.logit_scale.fill_(10.0)
    student.clip.clamp_logit_scale()
    assert student.clip.logit_scale.item() == pytest.approx(MAX_LOGIT_SCALE)
    assert math.exp(MAX_LOGIT_SCALE) == pytest.approx(100.0)


@pytest.mark.parametrize("temporal", ["seqTransf", "meanP"])
def test_padded_frames_do_not_matter(temporal: str) -> None:
    student = _student(temporal=temporal, temporal_layers=2).eval()
    x = torch.randn(2, 4, student.clip.embed_dim)
    mask = torch.tensor([[1.0, 1, 0, 0], [1, 1, 1, 1]])
    x2 = x.clone()
    x2[0, 2:] = torch.randn(2, x.shape[-1]) * 5
    with torch.no_grad():
        a, b = student.video_from_features(x, mask), student.video_from_features(x2, mask)
    torch.testing.assert_close(a.embedding, b.embedding, rtol=1e-5, atol=1e-6)
    assert a.frame_weights[0, 2:].eq(0).all()
    torch.testing.assert_close(a.frame_weights.sum(-1), torch.ones(2))
    torch.testing.assert_close(a.embedding.norm(dim=-1), torch.ones(2))


def test_all_ones_mask_equals_unmasked_official_formula() -> None:
    student = _student(temporal="meanP").eval()
    y = torch.randn(3, 5, student.clip.embed_dim)
    with torch.no_grad():
        out = student.video_from_features(y, torch.ones(3, 5))
        w = student.afa.frame_logits(y)
        alpha = torch.softmax(w / 0.1, dim=-1)
        v = (alpha.unsqueeze(-1) * torch.nn.functional.normalize(y, dim=-1)).sum(1)
    torch.testing.assert_close(out.embedding, torch.nn.functional.normalize(v, dim=-1))
    torch.testing.assert_close(out.frame_weights, torch.softmax(w, dim=-1))


def test_seq_transf_init_and_residual() -> None:
    towers = load_clip("tiny", seed=0)
    temporal = TemporalTransformer(64, 2, heads=4)
    temporal.init_from_clip_text(towers)
    torch.testing.assert_close(temporal.position_embedding.weight, towers.text_position_embedding())
    layer = towers.text_layers()[1]
    torch.testing.assert_close(temporal.layers[1].mlp.fc2.weight, layer.mlp.fc2.weight)
    torch.testing.assert_close(
        temporal.layers[1].self_attn.k_proj.bias, layer.self_attn.k_proj.bias
    )
    assert temporal.layers[0].layer_norm1.eps == 1e-12
    # Zeroing each block's output projections makes the blocks identities: y = x + P + x.
    with torch.no_grad():
        for block in temporal.layers:
            block.self_attn.out_proj.weight.zero_()
            block.self_attn.out_proj.bias.zero_()
            block.mlp.fc2.weight.zero_()
            block.mlp.fc2.bias.zero_()
        x = torch.randn(2, 3, 64)
        torch.testing.assert_close(temporal(x), 2 * x + temporal.position_embedding.weight[:3])
    with pytest.raises(ValueError):
        TemporalTransformer(32, 1).init_from_clip_text(towers)


def test_normalize_frames() -> None:
    frames = torch.randint(0, 256, (2, 3, 4, 5, 3), dtype=torch.uint8)
    mask = torch.tensor([[1, 1, 0], [1, 0, 0]])
    out = normalize_frames(frames, mask)
    assert out.shape == (2, 3, 3, 4, 5) and out.dtype == torch.float32
    assert out[0, 2].eq(0).all() and out[1, 1:].eq(0).all()
    expected = (frames[0, 0, 1, 2, 1].item() / 255 - CLIP_MEAN[1]) / CLIP_STD[1]
    assert out[0, 0, 1, 1, 2].item() == pytest.approx(expected, rel=1e-5)
