"""X-Pool teacher: block scoring vs a plain per-pair formula, masking, training, import."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from pipeline.models.clip import load_clip
from pipeline.models.teachers import TEACHERS, build_teacher
from pipeline.models.teachers.xpool import XPoolTeacher, load_official_xpool_state

WORDS = 8
FRAMES = 5


def make_teacher(init_seed: int = 0, **options: object) -> XPoolTeacher:
    torch.manual_seed(init_seed)
    teacher = XPoolTeacher(load_clip("tiny", seed=init_seed), WORDS, FRAMES, **options)  # type: ignore[arg-type]
    # Move away from the identity/zero initialisation so no test passes by symmetry.
    with torch.no_grad():
        for p in teacher.pool_frames.parameters():
            p.add_(0.2 * torch.randn_like(p))
    return teacher.eval()


def make_ids(n: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    ids = torch.randint(1, 40000, (n, WORDS), generator=gen)
    ids[:, 0] = 49406
    for i in range(n):
        length = 3 + i % (WORDS - 2)
        ids[i, length - 1] = 49407
        ids[i, length:] = 0
    return ids, (ids > 0).long()


def make_frames(n: int, f: int = FRAMES, seed: int = 1) -> torch.Tensor:
    return torch.randn(n, f, 3, 32, 32, generator=torch.Generator().manual_seed(seed))


def plain_pair(teacher: XPoolTeacher, t: torch.Tensor, x: torch.Tensor, m: torch.Tensor):
    """One (text, video) pair straight from method §3.3: returns (score, attention weights)."""
    pool = teacher.pool_frames
    ca = pool.cross_attn
    tl = pool.layer_norm1(t)
    q = ca.q_proj.weight @ tl + ca.q_proj.bias
    logits, vals = [], []
    for f in range(x.shape[0]):
        xf = pool.layer_norm1(x[f])
        k = ca.k_proj.weight @ xf + ca.k_proj.bias
        logits.append(float(torch.dot(k, q)) / math.sqrt(len(t)))
        vals.append(ca.v_proj.weight @ xf + ca.v_proj.bias)
    real = [f for f in range(x.shape[0]) if m[f] > 0]
    top = max(logits[f] for f in real)
    exps = {f: math.exp(logits[f] - top) for f in real}
    total = sum(exps.values())
    a = torch.tensor([exps.get(f, 0.0) / total for f in range(x.shape[0])])
    mixed = sum(a[f] * vals[f] for f in range(x.shape[0]))
    o = ca.out_proj.weight @ mixed + ca.out_proj.bias
    e = pool.layer_norm2(o)
    p = pool.layer_norm3(e + pool.linear_proj.weight @ e + pool.linear_proj.bias)
    lam = float(teacher.clip.logit_scale.exp())
    return lam * float(torch.dot(F.normalize(t, dim=0), F.normalize(p, dim=0))), a


@pytest.mark.parametrize("reduced", [True, False])
@torch.no_grad()
def test_block_score_equals_plain_per_pair_loop(reduced: bool) -> None:
    teacher = make_teacher(reduced=reduced)
    ids, tmask = make_ids(4)
    frames = make_frames(3)
    vmask = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 0, 0, 0], [1, 1, 1, 1, 0]])
    tf = teacher.encode_text(ids, tmask)
    vf = teacher.encode_video(frames, vmask)
    got = teacher.score(tf, vf, chunk_pairs=5)
    sentences = teacher.clip.encode_text(ids)[0]
    x = teacher.clip.encode_frames(frames)
    for i in range(4):
        for j in range(3):
            ref, _ = plain_pair(teacher, sentences[i], x[j], vmask[j])
            assert abs(float(got[i, j]) - ref) < 1e-4 * max(1.0, abs(ref)), (i, j, reduced)
    torch.testing.assert_close(teacher.score(tf, vf, chunk_pairs=1000), got)
    # Relevance = the attention weights of the positive pair, padded frames exactly 0.
    rel = teacher.relevance({k: v[:3] for k, v in tf.items()}, vf)
    for j in range(3):
        _, a = plain_pair(teacher, sentences[j], x[j], vmask[j])
        torch.testing.assert_close(rel[j], a.float(), rtol=1e-5, atol=1e-6)


@torch.no_grad()
def test_appending_padded_frame_changes_nothing_and_official_attends_padding() -> None:
    teacher = make_teacher()
    ids, tmask = make_ids(3)
    frames = make_frames(3, 4)
    vmask = torch.tensor([[1, 1, 1, 1], [1, 1, 1, 0], [1, 1, 0, 0]])
    tf = teacher.encode_text(ids, tmask)
    short = teacher.encode_video(frames, vmask)
    long = teacher.encode_video(
        torch.cat([frames, torch.zeros(3, 1, 3, 32, 32)], dim=1),
        torch.cat([vmask, torch.zeros(3, 1, dtype=vmask.dtype)], dim=1),
    )
    torch.testing.assert_close(teacher.score(tf, long), teacher.score(tf, short))
    logits_s, _ = teacher.relevance_logits(tf, short)
    logits_l, mask_l = teacher.relevance_logits(tf, long)
    torch.testing.assert_close(logits_l[:, :4][vmask.bool()], logits_s[vmask.bool()])
    torch.testing.assert_close(teacher.relevance(tf, long)[:, :4], teacher.relevance(tf, short))
    assert float(mask_l[:, 4].abs().sum()) == 0.0
    # Official: no masks, the padded (zero) frame takes attention and changes the score.
    teacher.official_masking = True
    long_official = teacher.encode_video(
        torch.cat([frames, torch.zeros(3, 1, 3, 32, 32)], dim=1),
        torch.cat([vmask, torch.zeros(3, 1, dtype=vmask.dtype)], dim=1),
    )
    assert torch.equal(long_official["mask"], torch.ones(3, 5))
    assert bool((teacher.relevance(tf, long_official)[:, 4] > 0).all())
    assert not torch.allclose(teacher.score(tf, long_official), teacher.score(tf, short))


def test_identity_initialisation() -> None:
    teacher = XPoolTeacher(load_clip("tiny", seed=0), WORDS, FRAMES)
    for name, module in teacher.pool_frames.named_modules():
        if isinstance(module, torch.nn.Linear):
            assert torch.equal(module.weight, torch.eye(module.in_features)), name
            assert torch.equal(module.bias, torch.zeros(module.out_features)), name
    assert teacher.temperature == pytest.approx(math.sqrt(teacher.clip.embed_dim))


def test_forward_backward_reaches_every_trainable_parameter() -> None:
    teacher = make_teacher().train()
    ids, tmask = make_ids(3)
    vmask = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0], [1, 1, 1, 1, 1]])
    logits = teacher(ids, tmask, make_frames(3), vmask)
    assert logits.shape == (3, 3)
    target = torch.arange(3)
    (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target)).backward()
    for name, p in teacher.named_parameters():
        if p.requires_grad:
            assert p.grad is not None, name
            assert torch.isfinite(p.grad).all(), name
            assert p.grad.abs().sum() > 0, name


def test_registry_config_and_official_import(tmp_path) -> None:
    from pipeline.models.checkpoint import import_official

    assert TEACHERS["xpool"] is XPoolTeacher
    source = make_teacher(init_seed=0, temperature=3.0)
    config = source.config_dict()
    options = {k: v for k, v in config.items() if k not in ("max_words", "max_frames")}
    rebuilt = build_teacher("xpool", load_clip("tiny"), WORDS, FRAMES, **options)
    assert rebuilt.config_dict() == config
    state = {f"clip.{k}": v.clone() for k, v in source.clip.model.state_dict().items()}
    pool_state = source.pool_frames.state_dict()
    state.update({f"pool_frames.{k}": v.clone() for k, v in pool_state.items()})
    target = make_teacher(init_seed=4, temperature=3.0)
    load_official_xpool_state(target, state)
    ids, tmask = make_ids(2)
    frames, vmask = make_frames(2), torch.ones(2, FRAMES)
    with torch.no_grad():
        expected = source.score(source.encode_text(ids, tmask), source.encode_video(frames, vmask))
        torch.testing.assert_close(
            target.score(target.encode_text(ids, tmask), target.encode_video(frames, vmask)),
            expected,
        )
    with pytest.raises(ValueError, match="unexpected keys"):
        load_official_xpool_state(target, {**state, "other.weight": torch.zeros(1)})
    # Through the registry, CLIP config inferred from the HF-named tensors; official = no masks.
    path = tmp_path / "xpool.pth"
    torch.save({"state_dict": state}, path)
    imported = import_official(
        "xpool", path, max_words=WORDS, max_frames=FRAMES, temperature=3.0,
        text_heads=4, vision_heads=4,  # tiny CLIP: not the width/64 OpenAI rule
    )
    assert isinstance(imported, XPoolTeacher) and imported.official_masking
    with torch.no_grad():
        torch.testing.assert_close(
            imported.score(imported.encode_text(ids, tmask), imported.encode_video(frames, vmask)),
            expected,
        )


@torch.no_grad()
def test_save_load_model_round_trip(tmp_path) -> None:
    from pipeline.models.checkpoint import load_model, save_model

    teacher = make_teacher(dropout=0.1)
    save_model(tmp_path / "x.pt", teacher)
    loaded, _ = load_model(tmp_path / "x.pt")
    assert isinstance(loaded, XPoolTeacher) and loaded.config_dict() == teacher.config_dict()
    ids, tmask = make_ids(2)
    frames, vmask = make_frames(2), torch.tensor([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]])
    torch.testing.assert_close(
        loaded.score(loaded.encode_text(ids, tmask), loaded.encode_video(frames, vmask)),
        teacher.score(teacher.encode_text(ids, tmask), teacher.encode_video(frames, vmask)),
    )
