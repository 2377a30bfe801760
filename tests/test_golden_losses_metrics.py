"""Losses (method §4) and metrics (method §7) against numbers from the official TeachCLIP code."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch

from pipeline.eval.metrics import retrieval_metrics
from pipeline.models.teachers.base import masked_softmax
from pipeline.train.losses import (
    TeacherTargets,
    coarse_loss,
    fine_loss,
    symmetric_infonce,
    teachclip_loss,
)

REPO = Path(__file__).resolve().parents[1]
GOLDEN = Path(os.environ.get("TEACHCLIP_GOLDEN", REPO / "tests" / "data" / "official_golden.npz"))
RTOL = 1e-6


@pytest.fixture(scope="module")
def golden() -> dict[str, np.ndarray]:
    with np.load(GOLDEN) as data:
        return {k: data[k] for k in data.files}


def _t(golden: dict[str, np.ndarray], key: str) -> torch.Tensor:
    return torch.from_numpy(np.asarray(golden[key], dtype=np.float64))


# ------------------------------------------------------------------------------ golden losses
@pytest.mark.parametrize("coarse", ["pear", "ce", "l1"])
@pytest.mark.parametrize("fine", ["ce", "pear", "l1"])
@pytest.mark.parametrize("n_teachers", [1, 2])
def test_golden_losses(golden, coarse: str, fine: str, n_teachers: int) -> None:
    teachers = [
        TeacherTargets(_t(golden, f"loss_teacher{m}_sim"), _t(golden, f"loss_teacher{m}_rel"))
        for m in range(1, n_teachers + 1)
    ]
    parts = teachclip_loss(_t(golden, "loss_student_sim"), _t(golden, "loss_student_weights"),
                           teachers, coarse=coarse, fine=fine)
    for part in ("gt", "coarse", "fine", "total"):
        value = getattr(parts, part)
        assert value.dtype == torch.float64
        expected = golden[f"loss_{coarse}_{fine}_t{n_teachers}_{part}"]
        np.testing.assert_allclose(value.item(), expected, rtol=RTOL, err_msg=part)


def test_golden_every_loss_key_covered(golden) -> None:
    keys = {k for k in golden if k.startswith("loss_") and k.split("_")[-1] in
            ("gt", "coarse", "fine", "total")}
    covered = {f"loss_{c}_{f}_t{m}_{p}" for c in ("pear", "ce", "l1") for f in ("ce", "pear", "l1")
               for m in (1, 2) for p in ("gt", "coarse", "fine", "total")}
    assert keys == covered


# ------------------------------------------------------------------------------ golden metrics
def test_golden_metrics(golden) -> None:
    sim = golden["metrics_sim"]
    n_text, n_video = sim.shape
    assert n_text == n_video
    out = retrieval_metrics(sim, np.arange(n_text))
    for key in ("R1", "R5", "R10", "R50", "MedianR", "MeanR"):
        np.testing.assert_allclose(out[key], golden[f"metrics_{key}"], rtol=RTOL, err_msg=key)
    np.testing.assert_array_equal(out["ranks"], golden["metrics_ranks"])
    for key in ("R1", "R5", "R10", "MedianR", "MeanR"):
        np.testing.assert_allclose(out[f"v2t_{key}"], golden[f"metrics_v2t_{key}"], rtol=RTOL,
                                   err_msg=f"v2t_{key}")
    # torch input gives the same numbers
    out_t = retrieval_metrics(torch.from_numpy(sim), torch.arange(n_text))
    np.testing.assert_array_equal(out_t["ranks"], out["ranks"])


# ------------------------------------------------------------------------------ metrics units
def test_ties_rank_last() -> None:
    out = retrieval_metrics(np.zeros((4, 4)), np.arange(4))
    assert out["ranks"].tolist() == [4, 4, 4, 4]
    assert out["R1"] == 0.0 and out["MedianR"] == 4.0
    assert out["v2t_ranks"].tolist() == [4, 4, 4, 4]


def test_partial_tie_counts_equal_scores() -> None:
    sim = np.array([[0.5, 0.5, 0.1], [0.2, 0.9, 0.9], [0.0, 0.0, 1.0]])
    out = retrieval_metrics(sim, np.array([0, 1, 2]))
    assert out["ranks"].tolist() == [2, 2, 1]


def test_nan_is_an_error_naming_position() -> None:
    sim = np.eye(3)
    sim[1, 2] = np.nan
    with pytest.raises(ValueError, match="row 1, video column 2"):
        retrieval_metrics(sim, np.arange(3))


def test_multi_caption_v2t_groups() -> None:
    # 5 captions, 3 videos: captions 0,1 -> video 0; 2 -> video 1; 3,4 -> video 2.
    text_video = np.array([0, 0, 1, 2, 2])
    sim = np.array([
        [0.9, 0.1, 0.8],  # caption 0 (video 0)
        [0.2, 0.3, 0.7],  # caption 1 (video 0)
        [0.1, 0.6, 0.2],  # caption 2 (video 1)
        [0.3, 0.5, 0.4],  # caption 3 (video 2)
        [0.0, 0.2, 0.1],  # caption 4 (video 2)
    ])
    out = retrieval_metrics(sim, text_video)
    assert out["ranks"].tolist() == [1, 3, 1, 2, 2]
    # group scores (rows = groups of videos 0,1,2; cols = videos):
    #   g0 = max(c0,c1) = [0.9, 0.3, 0.8]; g1 = [0.1, 0.6, 0.2]; g2 = max(c3,c4) = [0.3, 0.5, 0.4]
    # video 0: g0=.9 best -> 1; video 1: g1=.6 vs g0=.3, g2=.5 -> 1; video 2: g2=.4 vs g0=.8 -> 2
    assert out["v2t_ranks"].tolist() == [1, 1, 2]
    assert out["v2t_n_queries"] == 3 and out["n_queries"] == 5


def test_v2t_skips_videos_without_captions() -> None:
    sim = np.array([[0.9, 0.1, 0.8], [0.1, 0.2, 0.9]])
    out = retrieval_metrics(sim, np.array([0, 2]))
    assert out["v2t_n_queries"] == 2
    assert out["v2t_ranks"].tolist() == [1, 1]


def test_metrics_reject_bad_text_video() -> None:
    with pytest.raises(ValueError, match="outside"):
        retrieval_metrics(np.eye(3), np.array([0, 1, 3]))


# ------------------------------------------------------------------------------ loss units
def _random(b: int = 5, f: int = 7, seed: int = 0) -> tuple[torch.Tensor, ...]:
    g = torch.Generator().manual_seed(seed)
    s = torch.randn(b, b, generator=g, dtype=torch.float64) * 5
    t = torch.randn(b, b, generator=g, dtype=torch.float64) * 5
    w = torch.softmax(torch.randn(b, f, generator=g, dtype=torch.float64), dim=1)
    r = torch.softmax(torch.randn(b, f, generator=g, dtype=torch.float64), dim=1)
    return s, t, w, r


def test_coarse_pear_zero_when_equal_and_scale_invariant() -> None:
    s, t, _, _ = _random()
    assert coarse_loss(s, s, "pear").item() == pytest.approx(0.0, abs=1e-7)
    assert coarse_loss(s, t, "pear").item() > 0.01
    assert coarse_loss(s, s, "l1").item() == 0.0


def test_fine_ce_minimised_at_teacher_distribution() -> None:
    _, _, w, r = _random()
    at_target = fine_loss(r, r, "ce").item()
    assert fine_loss(w, r, "ce").item() > at_target
    # Gibbs: the minimum is the mean entropy / F
    entropy = -(r * r.log()).sum(1).mean().item() / r.shape[1]
    assert at_target == pytest.approx(entropy, rel=1e-12)
    assert fine_loss(r, r, "pear").item() == pytest.approx(0.0, abs=1e-5)  # eps 1e-8


def test_fine_ce_padding_frames_are_finite() -> None:
    w = torch.tensor([[0.5, 0.5, 0.0]], requires_grad=True)
    r = torch.tensor([[0.3, 0.7, 0.0]])
    loss = fine_loss(w, r, "ce")
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(w.grad).all()


def test_infonce_stable_for_large_logits() -> None:
    s = torch.eye(4) * 1e4
    assert symmetric_infonce(s).item() == pytest.approx(0.0, abs=1e-6)
    assert torch.isfinite(symmetric_infonce(-s))
    # uniform logits -> log B
    assert symmetric_infonce(torch.zeros(4, 4)).item() == pytest.approx(np.log(4), rel=1e-6)


def test_no_teacher_is_baseline_and_weights_override() -> None:
    s, t, w, r = _random()
    base = teachclip_loss(s, None, [])
    assert base.total.item() == symmetric_infonce(s).item()
    assert base.coarse.item() == 0.0 and base.fine.item() == 0.0
    parts = teachclip_loss(s, w, [TeacherTargets(t, r)], weights=(1.0, 0.0, 0.0))
    assert parts.total.item() == pytest.approx(parts.gt.item())
    default = teachclip_loss(s, w, [TeacherTargets(t, r)])
    expected = 0.2 * default.gt + default.coarse + 2 * default.fine
    assert default.total.item() == pytest.approx(expected.item())


def test_multi_teacher_averages_losses_not_matrices() -> None:
    s, t, w, r = _random()
    t2 = t.flip(0)
    r2 = r.flip(1)
    both = teachclip_loss(s, w, [TeacherTargets(t, r), TeacherTargets(t2, r2)], coarse="ce")
    c = (coarse_loss(s, t, "ce") + coarse_loss(s, t2, "ce")) / 2
    f = (fine_loss(w, r, "ce") + fine_loss(w, r2, "ce")) / 2
    assert both.coarse.item() == pytest.approx(c.item(), rel=1e-12)
    assert both.fine.item() == pytest.approx(f.item(), rel=1e-12)
    avg_matrix = coarse_loss(s, (t + t2) / 2, "ce").item()
    assert both.coarse.item() != pytest.approx(avg_matrix, rel=1e-6)
    assert both.total.item() == pytest.approx((both.gt + 10 * both.coarse + both.fine).item())


def test_beta_divides_student_and_teacher() -> None:
    s, t, w, r = _random()
    parts = teachclip_loss(s, w, [TeacherTargets(t, r)], coarse="pear", beta=2.0)
    assert parts.coarse.item() == pytest.approx(coarse_loss(s / 2, t / 2, "pear").item())
    # The official step divides before the ground-truth loss too.
    assert parts.gt.item() == pytest.approx(symmetric_infonce(s / 2).item())
    assert parts.gt.item() != pytest.approx(symmetric_infonce(s).item(), rel=1e-3)
    assert teachclip_loss(s, None, [], beta=2.0).total.item() == pytest.approx(parts.gt.item())


@pytest.fixture(scope="module")
def official_beta() -> dict[str, float]:
    path = REPO / "tests" / "data" / "official_loss_beta.json"
    return json.loads(path.read_text(encoding="utf-8"))["values"]


@pytest.mark.parametrize("beta", [0.5, 2.0])
@pytest.mark.parametrize("coarse", ["pear", "ce", "l1"])
@pytest.mark.parametrize("fine", ["ce", "pear", "l1"])
@pytest.mark.parametrize("n_teachers", [1, 2])
def test_golden_losses_beta(golden, official_beta, beta: float, coarse: str, fine: str,
                            n_teachers: int) -> None:
    """β ≠ 1 against the official train_epoch run on the golden loss inputs."""
    teachers = [
        TeacherTargets(_t(golden, f"loss_teacher{m}_sim"), _t(golden, f"loss_teacher{m}_rel"))
        for m in range(1, n_teachers + 1)
    ]
    parts = teachclip_loss(_t(golden, "loss_student_sim"), _t(golden, "loss_student_weights"),
                           teachers, coarse=coarse, fine=fine, beta=beta)
    for part in ("gt", "coarse", "fine", "total"):
        expected = official_beta[f"beta{beta:g}_{coarse}_{fine}_t{n_teachers}_{part}"]
        np.testing.assert_allclose(getattr(parts, part).item(), expected, rtol=RTOL,
                                   err_msg=part)
    at_one = golden[f"loss_{coarse}_{fine}_t{n_teachers}_gt"]
    assert abs(parts.gt.item() - at_one) > 1e-3  # β really changes L_gt


def _padded_case(seed: int = 3) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Student weights masked over real frames; teacher relevance from the same logits with
    official masking (softmax over all F) and with our masking (softmax over real frames)."""
    g = torch.Generator().manual_seed(seed)
    b, f = 4, 8
    mask = torch.ones(b, f, dtype=torch.bool)
    mask[0, 5:] = False
    mask[2, 2:] = False
    w = masked_softmax(torch.randn(b, f, generator=g, dtype=torch.float64), mask, dim=1)
    logits = torch.randn(b, f, generator=g, dtype=torch.float64)
    r_official = torch.softmax(logits, dim=1)
    r_own = masked_softmax(logits, mask, dim=1)
    return w, r_official, r_own, mask


@pytest.mark.parametrize("method", ["ce", "pear", "l1"])
def test_fine_loss_ignores_relevance_on_padded_frames(method: str) -> None:
    w, r_official, r_own, _ = _padded_case()
    assert w[0, 5:].eq(0).all() and r_official[0, 5:].gt(0).all()
    official_cache = fine_loss(w, r_official, method)
    own_cache = fine_loss(w, r_own, method)
    assert official_cache.item() == pytest.approx(own_cache.item(), rel=1e-12)


def test_fine_ce_has_no_constant_for_padded_frames() -> None:
    """Before the fix, each padded frame added R·(−log tiny) ≈ R·708 (float64) to the mean."""
    w, r_official, r_own, mask = _padded_case()
    tiny = torch.finfo(torch.float64).tiny
    naive = (-(r_official * torch.log(w.clamp_min(tiny)))).mean().item()
    constant = (r_official * ~mask).sum().item() * -np.log(tiny) / w.numel()
    fixed = fine_loss(w, r_official, "ce").item()
    assert constant > 1.0 and naive > fixed + 0.9 * constant
    # and the fixed loss is the plain CE over real frames against the renormalised target
    manual = -(r_own[mask] * torch.log(w[mask])).sum().item() / w.numel()
    assert fixed == pytest.approx(manual, rel=1e-12)


def test_fine_loss_unchanged_when_every_frame_is_seen() -> None:
    _, _, w, r = _random()
    expected = (-(r * torch.log(w))).mean().item()
    assert fine_loss(w, r, "ce").item() == pytest.approx(expected, rel=1e-14)


def test_low_precision_inputs_computed_in_float32() -> None:
    s, t, w, r = _random()
    ref = teachclip_loss(s.float(), w.float(), [TeacherTargets(t.float(), r.float())])
    half = teachclip_loss(s.bfloat16(), w.bfloat16(), [TeacherTargets(t.bfloat16(), r.bfloat16())])
    assert half.total.dtype == torch.float32
    assert half.total.item() == pytest.approx(ref.total.item(), rel=5e-2)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        auto = teachclip_loss(s.float(), w.float(), [TeacherTargets(t.float(), r.float())])
    assert auto.total.dtype == torch.float32
    assert auto.total.item() == pytest.approx(ref.total.item(), rel=1e-6)


def test_bad_method_rejected() -> None:
    s, t, w, r = _random()
    with pytest.raises(ValueError, match="coarse method"):
        teachclip_loss(s, w, [TeacherTargets(t, r)], coarse="kl")
    with pytest.raises(ValueError, match="fine method"):
        teachclip_loss(s, w, [TeacherTargets(t, r)], fine="kl")
