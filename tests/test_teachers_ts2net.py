"""TS2-Net teacher: perturbed top-k, token shift, scoring, masking, training, official import."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from pipeline.models.clip import ClipTowers, load_clip
from pipeline.models.convert import hf_state_dict_to_openai
from pipeline.models.teachers import TEACHERS, build_teacher
from pipeline.models.teachers.topk import PerturbedTopK
from pipeline.models.teachers.ts2net import TS2NetTeacher, run_temporal
from pipeline.models.teachers.ts2net_import import load_official_ts2net_state
from pipeline.models.temporal import TemporalTransformer
from pipeline.models.token_shift import shift_tokens

WORDS = 8
FRAMES = 5


def tiny_towers(seed: int = 0) -> ClipTowers:
    """Tiny CLIP: 2 vision layers, 32px images, 8px patches → 16 patches (17 tokens)."""
    return load_clip("tiny", seed=seed)


def make_teacher(init_seed: int = 0, **options: object) -> TS2NetTeacher:
    torch.manual_seed(init_seed)
    teacher = TS2NetTeacher(tiny_towers(init_seed), WORDS, FRAMES, **options)  # type: ignore[arg-type]
    # Random (non-init) head weights so that no test passes thanks to a symmetric initialisation.
    with torch.no_grad():
        for p in teacher.visual_token_selector.parameters():
            p.add_(0.3 * torch.randn_like(p))
    return teacher.eval()


def make_ids(n: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    ids = torch.randint(1, 40000, (n, WORDS), generator=gen)
    ids[:, 0] = 49406
    lengths = torch.randint(3, WORDS + 1, (n,), generator=gen)
    for i, length in enumerate(lengths.tolist()):
        ids[i, length - 1] = 49407
        ids[i, length:] = 0
    return ids, (ids > 0).long()


def make_frames(n: int, f: int = FRAMES, seed: int = 1) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(n, f, 3, 32, 32, generator=gen)


# ----------------------------------------------------------------------------- perturbed top-k


def official_topk(scores: torch.Tensor, noise: torch.Tensor, k: int, sigma: float):
    """The official PerturbedTopKFunction written plainly with explicit one-hots [N,S,k,P]."""
    perturbed = scores[:, None, :] + noise * sigma
    indices = torch.sort(torch.topk(perturbed, k=k, dim=-1).indices, dim=-1).values
    onehot = F.one_hot(indices, num_classes=scores.shape[-1]).float()
    forward = onehot.mean(dim=1)
    expected_grad = torch.einsum("bnkd,bnd->bkd", onehot, noise) / noise.shape[1] / sigma
    return forward, expected_grad


def test_topk_same_seed_same_output_rows_sum_to_one() -> None:
    scores = torch.rand(6, 16) * 0.1  # near ties: the noise matters
    a = PerturbedTopK(3, 500, 0.05, seed=7).eval()(scores)
    b = PerturbedTopK(3, 500, 0.05, seed=7).eval()(scores)
    c = PerturbedTopK(3, 500, 0.05, seed=8).eval()(scores)
    assert a.shape == (6, 3, 16)
    assert torch.equal(a, b)
    assert not torch.equal(a, c)
    torch.testing.assert_close(a.sum(-1), torch.ones(6, 3))
    # Training mode: reproducible from the seed, fresh noise on every call.
    t1 = PerturbedTopK(3, 500, 0.05, seed=7).train()
    t2 = PerturbedTopK(3, 500, 0.05, seed=7).train()
    first = t1(scores)
    assert torch.equal(first, t2(scores))
    assert not torch.equal(first, t1(scores))
    torch.testing.assert_close(first.sum(-1), torch.ones(6, 3))


def test_topk_eval_selection_does_not_depend_on_batch() -> None:
    topk = PerturbedTopK(3, 200, 0.05, seed=3).eval()
    scores = torch.rand(5, 16) * 0.1
    full = topk(scores)
    torch.testing.assert_close(topk(scores[2:4]), full[2:4])
    torch.testing.assert_close(topk(scores.flip(0)), full.flip(0))


def test_topk_large_gaps_give_hard_top3_in_index_order() -> None:
    scores = torch.zeros(2, 16)
    scores[0, [9, 2, 14]] = torch.tensor([5.0, 4.0, 3.0])
    scores[1, [0, 15, 7]] = torch.tensor([3.0, 5.0, 4.0])
    out = PerturbedTopK(3, 500, 0.05, seed=0).eval()(scores)
    expected = torch.zeros(2, 3, 16)
    for row, picks in enumerate([[2, 9, 14], [0, 7, 15]]):
        for slot, patch in enumerate(picks):
            expected[row, slot, patch] = 1.0
    assert torch.equal(out, expected)


def test_topk_matches_official_forward_and_backward() -> None:
    seed, samples, sigma = 5, 300, 0.05
    scores = (torch.rand(4, 16) * 0.2).requires_grad_(True)
    grad_out = torch.randn(4, 3, 16)
    out = PerturbedTopK(3, samples, sigma, seed=seed).eval()(scores)
    out.backward(grad_out)
    noise = torch.randn(samples, 16, generator=torch.Generator().manual_seed(seed))
    ref_out, ref_expected = official_topk(scores.detach(), noise.expand(4, -1, -1), 3, sigma)
    ref_grad = torch.einsum("bkd,bkd->bd", grad_out, ref_expected)
    torch.testing.assert_close(out, ref_out)
    torch.testing.assert_close(scores.grad, ref_grad)
    assert scores.grad.abs().sum() > 0


def test_topk_sigma_zero_is_the_noiseless_official_selection() -> None:
    """σ = 0: official forward (x + 0·noise, sorted top-k one-hots, mean over samples) exactly,
    whatever the noise, seed or mode; gradient 0 and finite (the official one divides by σ)."""
    scores = (torch.rand(5, 16) * 0.1).requires_grad_(True)  # near ties: any noise would show
    noise = torch.randn(5, 50, 16)
    ref, _ = official_topk(scores.detach(), noise, 3, 0.0)
    outs = [PerturbedTopK(3, 50, 0.0, seed=seed).train(mode)(scores)
            for seed in (0, 1) for mode in (False, True)]
    for out in outs:
        assert torch.equal(out, ref)
    assert torch.equal(ref.sum(-1), torch.ones(5, 3)) and set(ref.unique().tolist()) == {0.0, 1.0}
    outs[0].backward(torch.randn(5, 3, 16))
    assert scores.grad is not None and torch.equal(scores.grad, torch.zeros(5, 16))
    with pytest.raises(ValueError, match="sigma >= 0"):
        PerturbedTopK(3, 50, -0.1)


def test_teacher_with_sigma_zero_is_deterministic() -> None:
    frames = make_frames(2)
    vmask = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]])
    feats = []
    for seed in (0, 9):
        teacher = make_teacher(sigma=0.0, seed=seed)
        with torch.no_grad():
            feats.append(teacher.encode_video(frames, vmask)["frames"])
            teacher.train()
            feats.append(teacher.encode_video(frames, vmask)["frames"])
    for other in feats[1:]:
        torch.testing.assert_close(other, feats[0], rtol=0, atol=0)
    noisy = make_teacher(sigma=0.05, seed=0, num_samples=2)
    with torch.no_grad():
        assert not torch.equal(noisy.encode_video(frames, vmask)["frames"], feats[0])
    assert make_teacher(sigma=0.0).config_dict()["sigma"] == 0.0


def test_gradient_flows_through_scorer() -> None:
    teacher = make_teacher()
    tokens = torch.randn(6, 17, teacher.clip.embed_dim)
    selected = teacher.visual_token_selector(tokens)
    assert selected.shape == (6, 4, teacher.clip.embed_dim)
    (selected[:, 1:] * torch.randn_like(selected[:, 1:])).sum().backward()
    for name, p in teacher.visual_token_selector.score_predictor.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
        assert p.grad.abs().sum() > 0, name


# ----------------------------------------------------------------------------- token shift


def test_shift_tokens_moves_exactly_the_expected_tokens() -> None:
    b, f, t = 2, 4, 17
    x = torch.zeros(b * f, t, 3)
    for video in range(b):
        for frame in range(f):
            for tok in range(t):
                x[video * f + frame, tok] = torch.tensor([video, frame, tok], dtype=torch.float)
    out = shift_tokens(x, f, step=7)
    from_prev, from_next = {1, 8, 15}, {4, 11}
    for video in range(b):
        for frame in range(f):
            for tok in range(t):
                source = frame
                if tok in from_prev and frame >= 1:
                    source = frame - 1
                if tok in from_next and frame <= f - 2:
                    source = frame + 1
                expected = torch.tensor([video, source, tok], dtype=torch.float)
                assert torch.equal(out[video * f + frame, tok], expected), (video, frame, tok)
    # With a mask, a padded neighbour behaves like a boundary.
    valid = torch.tensor([[1, 1, 1, 0], [1, 1, 1, 1]], dtype=torch.bool)
    masked = shift_tokens(x, f, step=7, valid=valid)
    assert torch.equal(masked[2, 4], x[2, 4])  # video 0, frame 2 keeps its own token 4
    assert torch.equal(masked[3, 1], x[2, 1])  # the padded frame still receives (harmless)
    assert torch.equal(masked[4:], out[4:])


def manual_frame_tokens(towers: ClipTowers, pixels: torch.Tensor, shift_layers: set[int],
                        valid: torch.Tensor | None) -> torch.Tensor:
    """The CLIP vision forward layer by layer, shifting only the attention input (LN1 output)."""
    vm = towers.model.vision_model
    b, f = pixels.shape[:2]
    h = vm.pre_layrnorm(vm.embeddings(pixels.reshape(b * f, 3, 32, 32)))
    for index, layer in enumerate(vm.encoder.layers):
        attn_in = layer.layer_norm1(h)
        if index in shift_layers:
            attn_in = shift_tokens(attn_in, f, 7, valid)
        h = h + layer.self_attn(hidden_states=attn_in)[0]
        h = h + layer.mlp(layer.layer_norm2(h))
    out = towers.model.visual_projection(vm.post_layernorm(h))
    return out.reshape(b, f, *out.shape[1:])


@torch.no_grad()
def test_token_shift_off_is_vanilla_and_on_matches_manual_layers() -> None:
    pixels = make_frames(2, 4)
    mask = torch.tensor([[1, 1, 1, 0], [1, 1, 1, 1]])
    plain = make_teacher(token_shift=False)
    vanilla = plain.clip.encode_frame_tokens(pixels)
    torch.testing.assert_close(plain.frame_tokens(pixels, mask), vanilla, rtol=0, atol=0)

    shifted = make_teacher(token_shift=True)
    assert shifted.shift_layers == [0, 1]  # the last two vision layers of the tiny CLIP
    got = shifted.frame_tokens(pixels, mask)
    expected = manual_frame_tokens(shifted.clip, pixels, {0, 1}, mask.bool())
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)
    assert not torch.allclose(got, vanilla, atol=1e-4)
    # Shifting the residual stream too (a plausible mistake) gives something else.
    vm = shifted.clip.model.vision_model
    h = vm.pre_layrnorm(vm.embeddings(pixels.reshape(8, 3, 32, 32)))
    for layer in vm.encoder.layers:
        h = shift_tokens(h, 4, 7, mask.bool())
        h = h + layer.self_attn(hidden_states=layer.layer_norm1(h))[0]
        h = h + layer.mlp(layer.layer_norm2(h))
    wrong = vm.post_layernorm(h)
    wrong = shifted.clip.model.visual_projection(wrong).reshape(got.shape)
    assert not torch.allclose(got, wrong, atol=1e-4)
    # Official mode: padding shifts like real frames (upstream), no mask in the shift.
    shifted.official_masking = True
    torch.testing.assert_close(
        shifted.frame_tokens(pixels, mask),
        manual_frame_tokens(shifted.clip, pixels, {0, 1}, None), rtol=1e-5, atol=1e-5,
    )
    # Outside the teacher's context the hooks do nothing (single-image use of the towers).
    torch.testing.assert_close(shifted.clip.encode_frame_tokens(pixels), vanilla)


# ----------------------------------------------------------------------------- scoring


def plain_ts2net_score(s: torch.Tensor, c: torch.Tensor, m: torch.Tensor, lam: float) -> float:
    """One pair, straight from method §3.2: q_f = ĉ_f·ŝ, q̃ = masked q/‖q‖, a = softmax(4q̃)."""
    q = torch.stack([torch.dot(c[f], s) for f in range(c.shape[0])])
    real = [f for f in range(c.shape[0]) if m[f] > 0]
    norm = math.sqrt(sum(float(q[f]) ** 2 for f in real))
    exps = {f: math.exp(4.0 * float(q[f]) / norm) for f in real}
    total = sum(exps.values())
    return lam * sum(exps[f] / total * float(q[f]) for f in real)


@torch.no_grad()
def test_block_score_equals_plain_per_pair_loop() -> None:
    teacher = make_teacher(token_shift=True)
    ids, tmask = make_ids(4)
    vmask = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 0, 0, 0], [1, 1, 1, 1, 0]])
    tf = teacher.encode_text(ids, tmask)
    vf = teacher.encode_video(make_frames(3), vmask)
    got = teacher.score(tf, vf, chunk_pairs=3)  # several blocks, some partial
    lam = float(teacher.clip.logit_scale.exp())
    s = F.normalize(teacher.clip.encode_text(ids)[0], dim=-1)
    for i in range(4):
        for j in range(3):
            ref = plain_ts2net_score(s[i], vf["frames"][j], vmask[j], lam)
            assert abs(float(got[i, j]) - ref) < 1e-4 * max(1.0, abs(ref)), (i, j)
    torch.testing.assert_close(teacher.score(tf, vf, chunk_pairs=10_000), got)
    # Relevance: softmax over real frames of ŝ·ĉ_f.
    rel = teacher.relevance(slice_rows(tf, [0, 1, 2]), vf)
    for j in range(3):
        real = vmask[j].bool()
        ref = torch.softmax(vf["frames"][j][real] @ s[j], dim=0)
        torch.testing.assert_close(rel[j][real], ref)
        assert float(rel[j][~real].abs().sum()) == 0.0


def slice_rows(feats: dict[str, torch.Tensor], rows: list[int]) -> dict[str, torch.Tensor]:
    return {k: v[rows] for k, v in feats.items()}


@torch.no_grad()
def test_appending_padded_frame_changes_nothing() -> None:
    teacher = make_teacher(token_shift=True)
    ids, tmask = make_ids(3)
    frames = make_frames(3, 4)
    vmask = torch.tensor([[1, 1, 1, 1], [1, 1, 1, 0], [1, 1, 0, 0]])
    padded_frames = torch.cat([frames, torch.zeros(3, 1, 3, 32, 32)], dim=1)
    padded_mask = torch.cat([vmask, torch.zeros(3, 1, dtype=vmask.dtype)], dim=1)
    tf = teacher.encode_text(ids, tmask)
    short = teacher.encode_video(frames, vmask)
    long = teacher.encode_video(padded_frames, padded_mask)
    torch.testing.assert_close(teacher.score(tf, long), teacher.score(tf, short))
    logits_s, mask_s = teacher.relevance_logits(tf, short)
    logits_l, mask_l = teacher.relevance_logits(tf, long)
    real = vmask.bool()
    torch.testing.assert_close(logits_l[:, :4][real], logits_s[real])
    torch.testing.assert_close(teacher.relevance(tf, long)[:, :4], teacher.relevance(tf, short))
    assert float(teacher.relevance(tf, long)[:, 4].abs().sum()) == 0.0


@torch.no_grad()
def test_official_mode_tiles_the_mask() -> None:
    teacher = make_teacher(official_masking=True)
    nf = 6
    vmask = torch.tensor([[1, 1, 0, 0, 0, 0], [1, 1, 1, 1, 1, 0]])
    token_mask = teacher.token_mask(vmask)
    for i in range(4 * nf):
        assert torch.equal(token_mask[:, i], vmask[:, i % nf].float())
    feats = teacher.encode_video(make_frames(2, nf), vmask)
    for f in range(nf):
        assert torch.equal(feats["frame_mask"][:, f], vmask[:, (4 * f) % nf].float())
    assert torch.equal(feats["relevance_mask"], torch.ones(2, nf))
    correct = make_teacher(official_masking=False)
    assert torch.equal(correct.encode_video(make_frames(2, nf), vmask)["frame_mask"], vmask.float())
    assert torch.equal(correct.token_mask(vmask), vmask.float().repeat_interleave(4, dim=1))


def test_run_temporal_matches_temporal_transformer_and_wraps_positions() -> None:
    torch.manual_seed(0)
    temporal = TemporalTransformer(16, 2, heads=2)
    x = torch.randn(2, 20, 16)
    mask = torch.ones(2, 20)
    mask[1, 15:] = 0
    torch.testing.assert_close(run_temporal(temporal, x, mask), temporal(x, mask))
    long = torch.randn(1, 80, 16)
    out = run_temporal(temporal, long, torch.ones(1, 80))
    assert out.shape == (1, 80, 16) and torch.isfinite(out).all()


def test_forward_backward_reaches_every_trainable_parameter() -> None:
    teacher = make_teacher(token_shift=True).train()
    ids, tmask = make_ids(3)
    vmask = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0], [1, 1, 1, 1, 1]])
    logits = teacher(ids, tmask, make_frames(3), vmask)
    assert logits.shape == (3, 3)
    target = torch.arange(3)
    loss = F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target)
    loss.backward()
    for name, p in teacher.named_parameters():
        if p.requires_grad:
            assert p.grad is not None, name
            assert torch.isfinite(p.grad).all(), name
            assert p.grad.abs().sum() > 0, name
    groups = teacher.param_groups(lr=1e-4, coef_lr=1e-3, weight_decay=0.2)
    assert sum(len(g["params"]) for g in groups) == sum(1 for _ in teacher.parameters())


def test_registry_and_config_roundtrip() -> None:
    assert TEACHERS["ts2net"] is TS2NetTeacher
    teacher = make_teacher(token_shift=True, seed=11)
    config = teacher.config_dict()
    assert config["seed"] == 11 and config["token_shift"] is True
    options = {k: v for k, v in config.items() if k not in ("max_words", "max_frames")}
    rebuilt = build_teacher("ts2net", tiny_towers(), WORDS, FRAMES, **options)
    assert rebuilt.config_dict() == config


# ----------------------------------------------------------------------------- official import


def official_layout(teacher: TS2NetTeacher) -> dict[str, torch.Tensor]:
    """Write ``teacher`` as an upstream TS2-Net checkpoint: OpenAI CLIP names under ``clip.``,
    the shifted blocks' attention under ``attn.net.``, seqTransf in OpenAI MHA layout, and the
    unused modules the checkpoints also carry."""
    state: dict[str, torch.Tensor] = {}
    last_two = {f"visual.transformer.resblocks.{i}.attn." for i in teacher.shift_layers}
    for key, value in hf_state_dict_to_openai(teacher.clip.model.state_dict()).items():
        for prefix in last_two:
            if key.startswith(prefix):
                key = prefix + "net." + key[len(prefix):]
        state["clip." + key] = value.clone()
    temporal = teacher.temporal
    state["frame_position_embeddings.weight"] = temporal.position_embedding.weight.clone()
    for n, block in enumerate(temporal.layers):
        p = f"transformerClip.resblocks.{n}."
        attn = block.self_attn
        state[p + "attn.in_proj_weight"] = torch.cat(
            [attn.q_proj.weight, attn.k_proj.weight, attn.v_proj.weight])
        state[p + "attn.in_proj_bias"] = torch.cat(
            [attn.q_proj.bias, attn.k_proj.bias, attn.v_proj.bias])
        state[p + "attn.out_proj.weight"] = attn.out_proj.weight.clone()
        state[p + "attn.out_proj.bias"] = attn.out_proj.bias.clone()
        for ours, theirs in [(block.layer_norm1, "ln_1"), (block.layer_norm2, "ln_2"),
                             (block.mlp.fc1, "mlp.c_fc"), (block.mlp.fc2, "mlp.c_proj")]:
            state[f"{p}{theirs}.weight"] = ours.weight
            state[f"{p}{theirs}.bias"] = ours.bias
    sp = teacher.visual_token_selector.score_predictor
    state["visual_token_selector.score_predictor.in_conv.0.weight"] = sp.in_conv[0].weight
    state["visual_token_selector.score_predictor.in_conv.0.bias"] = sp.in_conv[0].bias
    state["visual_token_selector.score_predictor.in_conv.1.weight"] = sp.in_conv[1].weight
    state["visual_token_selector.score_predictor.out_conv.0.weight"] = sp.out_conv[0].weight
    state["visual_token_selector.score_predictor.out_conv.2.weight"] = sp.out_conv[2].weight
    state["visual_prompt_encoder.conv.weight"] = torch.zeros(8, 3, 4, 4)
    state["text_token_selector.score_predictor.in_conv.1.weight"] = torch.zeros(4, 8)
    return {k: v.detach().clone() for k, v in state.items()}


@torch.no_grad()
def test_official_import_round_trip_with_attn_net_rename() -> None:
    source = make_teacher(init_seed=0, token_shift=True)
    with torch.no_grad():
        for p in source.temporal.parameters():
            p.add_(0.05 * torch.randn_like(p))
    state = official_layout(source)
    assert any(".attn.net." in k for k in state)
    target = make_teacher(init_seed=5, token_shift=True)
    ignored = load_official_ts2net_state(target, state)
    assert ignored == [
        "text_token_selector.score_predictor.in_conv.1.weight",
        "visual_prompt_encoder.conv.weight",
    ]
    target_params = dict(target.named_parameters())
    for name, value in source.named_parameters():
        torch.testing.assert_close(target_params[name], value, rtol=0, atol=0, msg=name)
    ids, tmask = make_ids(2)
    frames, vmask = make_frames(2), torch.ones(2, FRAMES)
    torch.testing.assert_close(
        target.score(target.encode_text(ids, tmask), target.encode_video(frames, vmask)),
        source.score(source.encode_text(ids, tmask), source.encode_video(frames, vmask)),
    )
    with pytest.raises(ValueError, match="unexpected keys"):
        load_official_ts2net_state(target, {**state, "mystery.weight": torch.zeros(1)})
    # Dropping the shifted blocks' attention (what the TeachCLIP loader does silently) is an error.
    partial = {k: v for k, v in state.items() if ".attn.net." not in k}
    with pytest.raises(ValueError):
        load_official_ts2net_state(target, partial)


@torch.no_grad()
def test_import_official_via_checkpoint_registry(tmp_path) -> None:
    from pipeline.models.checkpoint import import_official

    source = make_teacher(init_seed=2, token_shift=True)
    path = tmp_path / "ts2net.pth"
    torch.save({"state_dict": official_layout(source)}, path)
    heads = {"text_heads": 4, "vision_heads": 4}  # tiny CLIP: not the width/64 OpenAI rule
    teacher = import_official("ts2net", path, max_words=WORDS, max_frames=FRAMES, **heads)
    assert isinstance(teacher, TS2NetTeacher)
    assert teacher.token_shift_enabled  # attn.net.* keys: trained with upstream's shift
    assert teacher.official_masking and not teacher.training
    ids, tmask = make_ids(2)
    frames, vmask = make_frames(2), torch.ones(2, FRAMES)
    torch.testing.assert_close(
        teacher.score(teacher.encode_text(ids, tmask), teacher.encode_video(frames, vmask)),
        source.score(source.encode_text(ids, tmask), source.encode_video(frames, vmask)),
    )
    # A TeachCLIP-port checkpoint (plain attn.* keys) imports without the shift.
    plain = {k.replace(".attn.net.", ".attn."): v for k, v in official_layout(source).items()}
    torch.save(plain, path)
    assert not import_official("ts2net", path, **heads).token_shift_enabled


def test_token_shift_survives_gradient_checkpointing() -> None:
    """Checkpointing would recompute the shifted layers outside the shift context: the teacher
    must give the same gradients with and without it."""

    def grads(checkpointing: bool) -> dict[str, torch.Tensor]:
        torch.manual_seed(0)
        towers = load_clip("tiny", seed=0, gradient_checkpointing=checkpointing)
        teacher = TS2NetTeacher(towers, WORDS, 4, token_shift=True).train()
        out = teacher.frame_tokens(make_frames(2, 4), torch.ones(2, 4))
        (out * torch.linspace(-1, 1, out.numel()).view_as(out)).sum().backward()
        assert any(getattr(m, "gradient_checkpointing", False) for m in towers.modules()) is (
            checkpointing
        )
        return {n: p.grad for n, p in teacher.named_parameters() if p.grad is not None}

    plain, checkpointed = grads(False), grads(True)
    assert plain.keys() == checkpointed.keys() and plain
    for name, grad in plain.items():
        torch.testing.assert_close(checkpointed[name], grad, msg=name)


@torch.no_grad()
def test_save_load_model_round_trip(tmp_path) -> None:
    from pipeline.models.checkpoint import load_model, save_model

    teacher = make_teacher(token_shift=True, seed=3, official_masking=True)
    save_model(tmp_path / "t.pt", teacher)
    loaded, _ = load_model(tmp_path / "t.pt")
    assert isinstance(loaded, TS2NetTeacher) and loaded.config_dict() == teacher.config_dict()
    ids, tmask = make_ids(2)
    frames, vmask = make_frames(2), torch.tensor([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]])
    torch.testing.assert_close(
        loaded.score(loaded.encode_text(ids, tmask), loaded.encode_video(frames, vmask)),
        teacher.score(teacher.encode_text(ids, tmask), teacher.encode_video(frames, vmask)),
    )
