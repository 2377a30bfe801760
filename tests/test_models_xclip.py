"""X-CLIP teacher: block scoring vs a plain per-pair loop, masking invariances, gradients."""

from __future__ import annotations

import pytest
import torch

from pipeline.models.clip import load_clip
from pipeline.models.teachers import TEACHERS, build_teacher
from pipeline.models.teachers.base import cat_features, slice_features
from pipeline.models.teachers.xclip import XCLIP_MATRICES, XClipHead, XClipTeacher

TAU = 0.01


def _ref_pair(head: XClipHead, s, w, vbar, fr, scale, wi, fi) -> torch.Tensor:  # noqa: ANN001
    """One pair, written plainly from method §3.1. Masking = keeping only real rows/cols of
    every matrix (absolute positions), which is what the masked mode promises."""

    def n(x: torch.Tensor) -> torch.Tensor:
        return x / x.norm(dim=-1, keepdim=True)

    def sm(x: torch.Tensor) -> torch.Tensor:
        return torch.softmax(x / TAU, dim=-1)

    s, vbar, w, f = n(s), n(vbar), n(w)[wi], n(fr)[fi]
    sub_w = {
        k: getattr(head, k)[wi][:, wi]
        for k in ("word_logit_weight", "word_mat_weight", "word_mat_weight2")
    }
    sub_f = {
        k: getattr(head, k)[fi][:, fi]
        for k in ("frame_logit_weight", "frame_mat_weight", "frame_mat_weight2")
    }
    z1 = s @ head.global_mat_weight @ vbar
    r = w @ vbar
    z2 = (sm(r) @ sub_w["word_logit_weight"]) @ r
    q = f @ s
    z3 = (sm(q) @ sub_f["frame_logit_weight"]) @ q
    S = w @ head.local_mat_weight @ f.T
    u = torch.stack([(sm(S[:, j]) @ sub_w["word_mat_weight"]) @ S[:, j] for j in range(S.shape[1])])
    g = torch.stack([(sm(S[i]) @ sub_f["frame_mat_weight"]) @ S[i] for i in range(S.shape[0])])
    z4 = 0.5 * ((sm(u) @ sub_f["frame_mat_weight2"]) @ u + (sm(g) @ sub_w["word_mat_weight2"]) @ g)
    return scale * (z1 + z2 + z3 + z4) / 4


@pytest.fixture()
def setup() -> dict:
    g = torch.Generator().manual_seed(1)
    nt, nv, L, Fr, D = 5, 7, 6, 4, 8
    head = XClipHead(D, L, Fr).double()
    with torch.no_grad():
        for name in XCLIP_MATRICES:  # away from identity so every matrix matters
            p = getattr(head, name)
            p.add_(0.3 * torch.randn(p.shape, generator=g, dtype=p.dtype))
    word_mask = torch.zeros(nt, L, dtype=torch.float64)
    for t, length in enumerate([6, 3, 4, 2, 5]):
        word_mask[t, :length] = 1
    frame_mask = torch.ones(nv, Fr, dtype=torch.float64)
    frame_mask[1, 3:] = 0
    frame_mask[4, 1:] = 0
    frame_mask[5, 2] = 0  # a hole in the middle also works
    return {
        "head": head,
        "s": torch.randn(nt, D, generator=g, dtype=torch.float64),
        "w": torch.randn(nt, L, D, generator=g, dtype=torch.float64),
        "v": torch.randn(nv, D, generator=g, dtype=torch.float64),
        "f": torch.randn(nv, Fr, D, generator=g, dtype=torch.float64),
        "wm": word_mask,
        "fm": frame_mask,
        "scale": 37.0,
    }


@pytest.mark.parametrize("official", [True, False])
@pytest.mark.parametrize("chunk_pairs", [1, 6, 1000])
def test_block_score_equals_per_pair_loop(setup: dict, official: bool, chunk_pairs: int) -> None:
    d = setup
    wm, fm = (None, None) if official else (d["wm"], d["fm"])
    with torch.no_grad():
        got = d["head"].score(d["s"], d["w"], wm, d["v"], d["f"], fm, d["scale"], chunk_pairs)
        L, Fr = d["w"].shape[1], d["f"].shape[1]
        for t in range(d["s"].shape[0]):
            for v in range(d["v"].shape[0]):
                wi = list(range(L)) if official else d["wm"][t].nonzero().flatten().tolist()
                fi = list(range(Fr)) if official else d["fm"][v].nonzero().flatten().tolist()
                ref = _ref_pair(
                    d["head"], d["s"][t], d["w"][t], d["v"][v], d["f"][v], d["scale"], wi, fi
                )
                torch.testing.assert_close(got[t, v], ref, rtol=1e-10, atol=1e-10)


def test_masked_scores_ignore_padding_content(setup: dict) -> None:
    d = setup
    w2, f2 = d["w"].clone(), d["f"].clone()
    w2[d["wm"] == 0] = torch.randn(int((d["wm"] == 0).sum()), w2.shape[-1], dtype=w2.dtype)
    f2[d["fm"] == 0] = torch.randn(int((d["fm"] == 0).sum()), f2.shape[-1], dtype=f2.dtype)
    with torch.no_grad():
        base = d["head"].score(d["s"], d["w"], d["wm"], d["v"], d["f"], d["fm"], d["scale"])
        moved = d["head"].score(d["s"], w2, d["wm"], d["v"], f2, d["fm"], d["scale"])
        official_base = d["head"].score(d["s"], d["w"], None, d["v"], d["f"], None, d["scale"])
        official_moved = d["head"].score(d["s"], w2, None, d["v"], f2, None, d["scale"])
    torch.testing.assert_close(base, moved, rtol=0, atol=1e-12)
    assert (official_base - official_moved).abs().max() > 1e-3


def _tiny_teacher(official: bool, L: int = 8, Fr: int = 4) -> XClipTeacher:
    towers = load_clip("tiny", seed=0)
    teacher = build_teacher("xclip", towers, L, Fr, temporal_layers=2, official_masking=official)
    assert isinstance(teacher, XClipTeacher) and TEACHERS["xclip"] is XClipTeacher
    return teacher.eval()


@pytest.mark.parametrize("official", [False, True])
def test_teacher_padding_invariance_end_to_end(official: bool) -> None:
    """Default masking: padding word ids / padded frame pixels change nothing; official: they do."""
    teacher = _tiny_teacher(official)
    ids = torch.tensor(
        [[49406, 320, 1125, 539, 49407, 0, 0, 0], [49406, 3306, 1002, 49407, 0, 0, 0, 0]]
    )
    mask = (torch.arange(8) < torch.tensor([[5], [4]])).long()
    ids2 = ids.clone()
    ids2[mask == 0] = 1234  # other "padding" token features
    frames = torch.randn(3, 4, 3, 32, 32)
    vmask = torch.tensor([[1, 1, 1, 0], [1, 1, 0, 0], [1, 1, 1, 1]])
    frames2 = frames.clone()
    frames2[vmask == 0] = torch.randn(int((vmask == 0).sum()), 3, 32, 32)
    with torch.no_grad():
        a = teacher.score(teacher.encode_text(ids, mask), teacher.encode_video(frames, vmask))
        b = teacher.score(teacher.encode_text(ids2, mask), teacher.encode_video(frames2, vmask))
        ra = teacher.relevance(
            teacher.encode_text(ids, mask), teacher.encode_video(frames[:2], vmask[:2])
        )
        rb = teacher.relevance(
            teacher.encode_text(ids, mask), teacher.encode_video(frames2[:2], vmask[:2])
        )
    if official:
        assert (a - b).abs().max() > 1e-4
        assert (ra - rb).abs().max() > 1e-6
    else:
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(ra, rb, rtol=1e-5, atol=1e-6)
        assert ra[vmask[:2] == 0].eq(0).all()
    torch.testing.assert_close(ra.sum(-1), torch.ones(2))


def test_teacher_forward_backward_and_param_groups() -> None:
    teacher = _tiny_teacher(False).train()
    frozen = {f"clip.model.{n}" for n in teacher.clip.freeze_per_spec()}
    ids = torch.tensor(
        [[49406, 320, 1125, 49407, 0, 0, 0, 0], [49406, 3306, 1002, 539, 320, 49407, 0, 0]]
    )
    mask = (ids > 0).long()
    frames = torch.randn(2, 4, 3, 32, 32)
    vmask = torch.tensor([[1, 1, 1, 0], [1, 1, 1, 1]])
    logits = teacher(ids, mask, frames, vmask)
    assert logits.shape == (2, 2)
    torch.nn.functional.cross_entropy(logits, torch.arange(2)).backward()
    for name, p in teacher.named_parameters():
        if name in frozen:
            assert p.grad is None, name
        else:
            assert p.grad is not None and p.grad.abs().sum() > 0, name
    groups = teacher.param_groups(lr=1e-4, coef_lr=1e-3, weight_decay=0.2)
    ids_in_groups = [id(p) for g in groups for p in g["params"]]
    trainable = [p for p in teacher.parameters() if p.requires_grad]
    assert sorted(ids_in_groups) == sorted(id(p) for p in trainable)
    by_name = {g["name"]: g for g in groups}
    assert by_name["clip_decay"]["lr"] == pytest.approx(1e-7)
    assert by_name["new_decay"]["lr"] == pytest.approx(1e-4)
    assert by_name["clip_no_decay"]["weight_decay"] == 0.0


def test_feature_helpers() -> None:
    feats = {"a": torch.arange(6).view(3, 2), "b": torch.arange(3)}
    part = slice_features(feats, [2, 0])
    assert part["a"].tolist() == [[4, 5], [0, 1]] and part["b"].tolist() == [2, 0]
    joined = cat_features([slice_features(feats, slice(0, 1)), slice_features(feats, slice(1, 3))])
    assert all(torch.equal(joined[k], feats[k]) for k in feats)
