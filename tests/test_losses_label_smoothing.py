"""Label smoothing of L_gt (the no-teacher control of `student train --label-smoothing`)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from pipeline.train.losses import symmetric_infonce, teachclip_loss


def _logits() -> torch.Tensor:
    return torch.randn(6, 6, generator=torch.Generator().manual_seed(0), dtype=torch.float64) * 5


@pytest.mark.parametrize("eps", [0.05, 0.1, 0.4])
def test_matches_torch_cross_entropy_in_both_directions(eps: float) -> None:
    s = _logits()
    target = torch.arange(6)
    expected = 0.5 * (F.cross_entropy(s, target, label_smoothing=eps)
                      + F.cross_entropy(s.t(), target, label_smoothing=eps))
    torch.testing.assert_close(symmetric_infonce(s, eps), expected, rtol=1e-12, atol=1e-12)


def test_zero_is_the_official_loss_bit_for_bit() -> None:
    s = _logits()
    official = 0.5 * (-torch.diagonal(F.log_softmax(s, 1)).mean()
                      - torch.diagonal(F.log_softmax(s, 0)).mean())
    assert torch.equal(symmetric_infonce(s), official)
    assert torch.equal(symmetric_infonce(s, 0.0), official)


def test_smoothing_reaches_the_baseline_loss_and_is_range_checked() -> None:
    s = _logits()
    parts = teachclip_loss(s, None, [], label_smoothing=0.2)
    assert torch.equal(parts.total, symmetric_infonce(s, 0.2))
    assert not torch.equal(parts.total, symmetric_infonce(s))
    with pytest.raises(ValueError, match=r"\[0, 1\)"):
        symmetric_infonce(s, 1.0)
