"""TeachCLIP training loss (method §4): ground truth InfoNCE + coarse and fine distillation.

Every function takes the global-batch matrices (in DDP the caller all-gathers features first) and
returns a scalar tensor. Arithmetic runs in ``float32`` at least (``float64`` stays ``float64`` so
the golden test can compare at 1e-6): under bf16/fp16 autocast the softmaxes and Pearson
correlations of B×B logits lose too many bits, and the loss is cheap compared with the towers.
Log-probabilities always come from ``log_softmax`` so large λ-scaled logits never overflow.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F

COARSE_METHODS = ("pear", "ce", "l1")
FINE_METHODS = ("ce", "pear", "l1")
# Pearson denominators get this added, as in the official (DIST-style) implementation: it only
# matters for constant rows, where the correlation is undefined and would otherwise be NaN.
PEARSON_EPS = 1e-8


@dataclass
class LossParts:
    """The loss terms of one step: logged separately, ``total`` is what gets back-propagated."""

    gt: torch.Tensor
    coarse: torch.Tensor
    fine: torch.Tensor
    total: torch.Tensor


@dataclass
class TeacherTargets:
    """One teacher's soft labels for the batch: ``logits`` [B,B] (rows = texts, λ-scaled, as the
    teacher scores them) and ``relevance`` [B,F] (frame relevance, already softmaxed over the
    frames of the cache's ``frame_mask``). Padded frames are 0 in a default cache but carry mass
    in one scored with ``official_masking`` (the official teachers softmax over all F frames);
    :func:`fine_loss` renormalises over the frames the student sees, so both train alike."""

    logits: torch.Tensor
    relevance: torch.Tensor


def _compute_dtype(x: torch.Tensor) -> torch.dtype:
    """float64 stays float64; everything narrower is computed in float32."""
    return torch.float64 if x.dtype == torch.float64 else torch.float32


def _prep(x: torch.Tensor) -> torch.Tensor:
    return x.to(_compute_dtype(x))


def _check_square(name: str, x: torch.Tensor) -> None:
    if x.dim() != 2 or x.shape[0] != x.shape[1]:
        raise ValueError(f"{name} must be a square [B,B] matrix, got shape {tuple(x.shape)}")


def _pearson_rows(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Row-wise Pearson correlation of two [N,K] matrices -> [N]."""
    xc = x - x.mean(dim=1, keepdim=True)
    yc = y - y.mean(dim=1, keepdim=True)
    return (xc * yc).sum(dim=1) / (xc.norm(dim=1) * yc.norm(dim=1) + PEARSON_EPS)


def symmetric_infonce(logits: torch.Tensor, label_smoothing: float = 0.0) -> torch.Tensor:
    """L_gt: mean of the text→video and video→text cross entropies with diagonal positives.

    Also the loss the teachers are trained with (they are CLIP4Clip-style dual encoders too).
    ``label_smoothing`` ε puts 1 − ε + ε/B on the positive and ε/B on every other item (as
    ``torch.nn.functional.cross_entropy``); 0 is the official loss, computed as before.
    """
    if not 0.0 <= label_smoothing < 1.0:
        raise ValueError(f"label smoothing must be in [0, 1), got {label_smoothing}")
    with torch.autocast(device_type=logits.device.type, enabled=False):
        _check_square("logits", logits)
        s = _prep(logits)
        t2v_log = F.log_softmax(s, dim=1)
        v2t_log = F.log_softmax(s, dim=0)
        t2v = -torch.diagonal(t2v_log).mean()
        v2t = -torch.diagonal(v2t_log).mean()
        if label_smoothing:
            eps = label_smoothing
            t2v = (1 - eps) * t2v - eps * t2v_log.mean(dim=1).mean()
            v2t = (1 - eps) * v2t - eps * v2t_log.mean(dim=0).mean()
        return 0.5 * (t2v + v2t)


def coarse_loss(S: torch.Tensor, T: torch.Tensor, method: str = "pear") -> torch.Tensor:
    """Coarse-grained distillation between student logits S and teacher logits T (both [B,B],
    already divided by β).

    ``pear``: 1 − Pearson of the row softmaxes, averaged over rows, plus the same on the
    transposes (relation matching: only the shape of the distribution matters, not its scale).
    ``ce``: soft cross entropy averaged over all B² entries, both directions. ``l1``: SmoothL1
    between the raw logits, one direction (as the official code).
    """
    if method not in COARSE_METHODS:
        raise ValueError(f"unknown coarse method {method!r}; expected one of {COARSE_METHODS}")
    with torch.autocast(device_type=S.device.type, enabled=False):
        _check_square("student logits", S)
        if T.shape != S.shape:
            raise ValueError(f"teacher logits shape {tuple(T.shape)} != student {tuple(S.shape)}")
        dtype = _compute_dtype(S)
        s, t = S.to(dtype), T.to(dtype)
        if method == "l1":
            return F.smooth_l1_loss(s, t, reduction="mean", beta=1.0)
        total = s.new_zeros(())
        for a, b in ((s, t), (s.t(), t.t())):
            if method == "pear":
                rho = _pearson_rows(F.softmax(a, dim=1), F.softmax(b, dim=1))
                total = total + (1.0 - rho).mean()
            else:  # ce
                total = total + (-(F.softmax(b, dim=1) * F.log_softmax(a, dim=1))).mean()
        return total


def seen_relevance(W: torch.Tensor, R: torch.Tensor) -> torch.Tensor:
    """The teacher relevance restricted to the frames the student sees, renormalised per row.

    Why: a cache scored with ``official_masking`` (an imported official teacher) softmaxes over all
    F frames, padded ones included, so part of R's mass sits on frames where the student's AFA
    weight is exactly 0 (our student masks padding). Those entries carry no gradient but would add
    a constant ``R·(−log tiny)`` to the fine cross entropy. Frames with ``W > 0`` are the ones the
    student sees; on them ``R / Σ R`` equals the softmax of the same relevance logits over the real
    frames, i.e. what an own-masking cache stores. With every frame seen (full-length videos, the
    golden vectors) this only divides by Σ R = 1. A row whose seen frames carry no mass stays 0.
    """
    r = torch.where(W > 0, R, torch.zeros_like(R))
    total = r.sum(dim=1, keepdim=True)
    return r / total.clamp_min(torch.finfo(r.dtype).tiny)


def fine_loss(W: torch.Tensor, R: torch.Tensor, method: str = "ce") -> torch.Tensor:
    """Fine-grained distillation between student frame weights W and teacher relevance R ([B,F],
    both probabilities over frames; padding frames included in the means, as the official code).

    R is first restricted to the frames the student sees (:func:`seen_relevance`): padded frames
    then carry 0 in both W and R, whatever the teacher cache's masking, and add nothing to any of
    the three losses beyond their count in the means. ``ce``: mean over B·F of −R log W (W clamped
    at the smallest normal float so those 0·log 0 entries are exactly 0 instead of NaN). ``pear``:
    1 − Pearson over frames, averaged over rows. ``l1``: SmoothL1(W, R).
    """
    if method not in FINE_METHODS:
        raise ValueError(f"unknown fine method {method!r}; expected one of {FINE_METHODS}")
    with torch.autocast(device_type=W.device.type, enabled=False):
        if W.dim() != 2 or R.shape != W.shape:
            raise ValueError(
                f"frame weights {tuple(W.shape)} and relevance {tuple(R.shape)} must both be [B,F]"
            )
        dtype = _compute_dtype(W)
        w = W.to(dtype)
        r = seen_relevance(w, R.to(dtype))
        if method == "ce":
            tiny = torch.finfo(dtype).tiny
            return (-(r * torch.log(w.clamp_min(tiny)))).mean()
        if method == "pear":
            return (1.0 - _pearson_rows(w, r)).mean()
        return F.smooth_l1_loss(w, r, reduction="mean", beta=1.0)


def default_weights(coarse: str) -> tuple[float, float, float]:
    """method §4 weights (gt, coarse, fine): ``ce`` coarse uses 1/10/1, the others 0.2/1/2."""
    return (1.0, 10.0, 1.0) if coarse == "ce" else (0.2, 1.0, 2.0)


def teachclip_loss(
    student_logits: torch.Tensor,
    student_weights: torch.Tensor | None,
    teachers: Sequence[TeacherTargets],
    coarse: str = "pear",
    fine: str = "ce",
    beta: float = 1.0,
    weights: tuple[float, float, float] | None = None,
    label_smoothing: float = 0.0,
) -> LossParts:
    """The full TeachCLIP objective for one (global) batch.

    ``student_logits`` [B,B] are λ-scaled (rows = texts, diagonal = positives); β divides the
    student's logits before every term that uses them, L_gt included, and each teacher's logits,
    as the official training step does (``sim_matrix / beta`` comes first; golden-checked at
    β ≠ 1 in ``tests/data/official_loss_beta.json``). With several teachers the per-teacher losses
    are averaged, never the matrices. With no teacher this is the plain CLIP4Clip baseline:
    ``total = gt`` and coarse/fine are 0 (the official code would divide by zero). ``weights``
    overrides the method's (gt, coarse, fine) weighting, which otherwise depends on the coarse
    method (:func:`default_weights`). ``label_smoothing`` smooths L_gt only (the
    no-teacher control of ``student train --label-smoothing``).
    """
    if coarse not in COARSE_METHODS:
        raise ValueError(f"unknown coarse method {coarse!r}; expected one of {COARSE_METHODS}")
    if fine not in FINE_METHODS:
        raise ValueError(f"unknown fine method {fine!r}; expected one of {FINE_METHODS}")
    if beta <= 0:
        raise ValueError(f"beta must be positive, got {beta}")
    gt = symmetric_infonce(_prep(student_logits) / beta, label_smoothing)
    zero = gt.new_zeros(())
    if not teachers:
        return LossParts(gt=gt, coarse=zero, fine=zero, total=gt)
    if student_weights is None:
        raise ValueError("fine distillation needs the student's frame weights (AFA aggregation)")
    S = student_logits.to(gt.dtype) / beta
    coarse_terms = [coarse_loss(S, t.logits.to(gt.dtype) / beta, coarse) for t in teachers]
    fine_terms = [fine_loss(student_weights, t.relevance, fine) for t in teachers]
    l_coarse = torch.stack(coarse_terms).mean()
    l_fine = torch.stack(fine_terms).mean().to(gt.dtype)
    w_gt, w_coarse, w_fine = weights if weights is not None else default_weights(coarse)
    total = w_gt * gt + w_coarse * l_coarse + w_fine * l_fine
    return LossParts(gt=gt, coarse=l_coarse, fine=l_fine, total=total)
