"""CLIP towers and the OpenAI→HF conversion, checked against an independent reference forward.

The reference below is written from OpenAI's ``model.py`` semantics directly on the OpenAI-layout
tensors (fused ``in_proj``, ``x @ proj`` projections, causal text mask), sharing no code with
``transformers`` or ``pipeline.models``.
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from pipeline.models.clip import FROZEN_PREFIXES, ClipTowers, load_clip
from pipeline.models.clip_config import tiny_clip_config
from pipeline.models.convert import hf_state_dict_to_openai, openai_state_dict_to_hf

TEXT_W, VIS_W, EMBED, CTX, VOCAB, PATCH, GRID = 128, 64, 48, 16, 1000, 16, 2


def _openai_state(text_layers: int = 2, vision_layers: int = 1) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)

    def rnd(*shape: int, std: float = 0.05) -> torch.Tensor:
        return torch.randn(*shape, generator=g) * std

    def block(prefix: str, w: int) -> dict[str, torch.Tensor]:
        return {
            f"{prefix}attn.in_proj_weight": rnd(3 * w, w, std=w**-0.5),
            f"{prefix}attn.in_proj_bias": rnd(3 * w),
            f"{prefix}attn.out_proj.weight": rnd(w, w, std=w**-0.5),
            f"{prefix}attn.out_proj.bias": rnd(w),
            f"{prefix}ln_1.weight": 1 + rnd(w),
            f"{prefix}ln_1.bias": rnd(w),
            f"{prefix}ln_2.weight": 1 + rnd(w),
            f"{prefix}ln_2.bias": rnd(w),
            f"{prefix}mlp.c_fc.weight": rnd(4 * w, w, std=w**-0.5),
            f"{prefix}mlp.c_fc.bias": rnd(4 * w),
            f"{prefix}mlp.c_proj.weight": rnd(w, 4 * w, std=(4 * w) ** -0.5),
            f"{prefix}mlp.c_proj.bias": rnd(w),
        }

    sd = {
        "token_embedding.weight": rnd(VOCAB, TEXT_W, std=0.5),
        "positional_embedding": rnd(CTX, TEXT_W, std=0.1),
        "ln_final.weight": 1 + rnd(TEXT_W),
        "ln_final.bias": rnd(TEXT_W),
        "text_projection": rnd(TEXT_W, EMBED, std=TEXT_W**-0.5),
        "logit_scale": torch.tensor(math.log(1 / 0.07)),
        "visual.conv1.weight": rnd(VIS_W, 3, PATCH, PATCH, std=0.05),
        "visual.class_embedding": rnd(VIS_W, std=0.5),
        "visual.positional_embedding": rnd(GRID * GRID + 1, VIS_W, std=0.1),
        "visual.ln_pre.weight": 1 + rnd(VIS_W),
        "visual.ln_pre.bias": rnd(VIS_W),
        "visual.ln_post.weight": 1 + rnd(VIS_W),
        "visual.ln_post.bias": rnd(VIS_W),
        "visual.proj": rnd(VIS_W, EMBED, std=VIS_W**-0.5),
    }
    for i in range(text_layers):
        sd.update(block(f"transformer.resblocks.{i}.", TEXT_W))
    for i in range(vision_layers):
        sd.update(block(f"visual.transformer.resblocks.{i}.", VIS_W))
    return sd


def _ref_block(x: torch.Tensor, sd: dict, p: str, causal: bool) -> torch.Tensor:
    w = x.shape[-1]
    heads = w // 64
    h = F.layer_norm(x, (w,), sd[p + "ln_1.weight"], sd[p + "ln_1.bias"], 1e-5)
    q, k, v = (h @ sd[p + "attn.in_proj_weight"].T + sd[p + "attn.in_proj_bias"]).chunk(3, -1)
    b, n, _ = x.shape
    q, k, v = (t.reshape(b, n, heads, w // heads).transpose(1, 2) for t in (q, k, v))
    att = q @ k.transpose(-1, -2) / math.sqrt(w // heads)
    if causal:
        att = att + torch.full((n, n), float("-inf")).triu(1)
    out = (att.softmax(-1) @ v).transpose(1, 2).reshape(b, n, w)
    x = x + out @ sd[p + "attn.out_proj.weight"].T + sd[p + "attn.out_proj.bias"]
    h = F.layer_norm(x, (w,), sd[p + "ln_2.weight"], sd[p + "ln_2.bias"], 1e-5)
    h = h @ sd[p + "mlp.c_fc.weight"].T + sd[p + "mlp.c_fc.bias"]
    h = h * torch.sigmoid(1.702 * h)
    return x + h @ sd[p + "mlp.c_proj.weight"].T + sd[p + "mlp.c_proj.bias"]


def _ref_text(sd: dict, ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    x = sd["token_embedding.weight"][ids] + sd["positional_embedding"][: ids.shape[1]]
    for i in range(2):
        x = _ref_block(x, sd, f"transformer.resblocks.{i}.", causal=True)
    x = F.layer_norm(x, (TEXT_W,), sd["ln_final.weight"], sd["ln_final.bias"], 1e-5)
    tokens = x @ sd["text_projection"]
    return tokens[torch.arange(ids.shape[0]), ids.argmax(-1)], tokens


def _ref_vision(sd: dict, pixels: torch.Tensor) -> torch.Tensor:
    x = F.conv2d(pixels, sd["visual.conv1.weight"], stride=PATCH).flatten(2).transpose(1, 2)
    cls = sd["visual.class_embedding"].expand(x.shape[0], 1, -1)
    x = torch.cat([cls, x], dim=1) + sd["visual.positional_embedding"]
    x = F.layer_norm(x, (VIS_W,), sd["visual.ln_pre.weight"], sd["visual.ln_pre.bias"], 1e-5)
    x = _ref_block(x, sd, "visual.transformer.resblocks.0.", causal=False)
    x = F.layer_norm(x, (VIS_W,), sd["visual.ln_post.weight"], sd["visual.ln_post.bias"], 1e-5)
    return x @ sd["visual.proj"]  # all tokens, [N, 1+P, D]


@pytest.fixture(scope="module")
def openai_sd() -> dict[str, torch.Tensor]:
    return _openai_state()


def test_openai_conversion_matches_reference(openai_sd: dict, tmp_path: Path) -> None:
    path = tmp_path / "clip4clip.bin"
    # CLIP4Clip-style file: ``clip.`` prefix and OpenAI's JIT ints, both handled by the loader.
    saved = {f"clip.{k}": v for k, v in openai_sd.items()}
    saved["clip.input_resolution"] = torch.tensor(PATCH * GRID)
    torch.save(saved, path)
    towers = load_clip(path).eval()
    assert towers.embed_dim == EMBED and towers.image_size == PATCH * GRID
    assert towers.config.text_config.num_attention_heads == TEXT_W // 64

    ids = torch.tensor([[998, 5, 17, 999, 0, 0], [998, 3, 999, 0, 0, 0]])
    with torch.no_grad():
        sentence, tokens = towers.encode_text(ids, torch.ones_like(ids))
        ref_sentence, ref_tokens = _ref_text(openai_sd, ids)
        torch.testing.assert_close(tokens, ref_tokens, rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(sentence, ref_sentence, rtol=1e-4, atol=1e-5)

        pixels = torch.randn(2, 3, 3, PATCH * GRID, PATCH * GRID)
        ref = _ref_vision(openai_sd, pixels.flatten(0, 1)).reshape(2, 3, GRID * GRID + 1, EMBED)
        torch.testing.assert_close(towers.encode_frames(pixels), ref[:, :, 0], rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(towers.encode_frame_tokens(pixels), ref, rtol=1e-4, atol=1e-5)
    assert towers.logit_scale.item() == pytest.approx(math.log(1 / 0.07))


def test_text_ignores_padding_mask(openai_sd: dict) -> None:
    """Causal only: padding never changes positions up to EOT, and the mask argument is unused."""
    config, hf = openai_state_dict_to_hf(openai_sd)
    towers = ClipTowers(config)
    towers.model.load_state_dict(hf, strict=False)
    short = torch.tensor([[998, 5, 999, 0]])
    longer = torch.tensor([[998, 5, 999, 0, 0, 0, 0]])
    with torch.no_grad():
        a, ta = towers.encode_text(short, torch.tensor([[1, 1, 1, 0]]))
        b, tb = towers.encode_text(longer)
    torch.testing.assert_close(a, b)
    torch.testing.assert_close(ta, tb[:, :4])


def test_inverse_mapping_roundtrip(openai_sd: dict) -> None:
    config, hf = openai_state_dict_to_hf(openai_sd)
    back = hf_state_dict_to_openai(hf)
    assert set(back) == set(openai_sd)
    for key, value in openai_sd.items():
        assert torch.equal(back[key], value), key


def test_unknown_keys_are_reported(openai_sd: dict) -> None:
    bad = dict(openai_sd)
    bad["transformer.resblocks.0.attn.mystery"] = torch.zeros(1)
    with pytest.raises(ValueError, match="mystery"):
        openai_state_dict_to_hf(bad)


def test_tiny_config_and_hf_dir(tmp_path: Path) -> None:
    towers = load_clip('tiny:{"text_layers": 1}', seed=0)
    assert towers.config.text_config.num_hidden_layers == 1
    assert towers.config.text_config.vocab_size == 49408
    assert towers.embed_dim == tiny_clip_config().projection_dim
    towers.model.save_pretrained(tmp_path)
    again = load_clip(tmp_path)
    ids = torch.tensor([[49406, 320, 49407, 0]])
    with torch.no_grad():
        torch.testing.assert_close(again.encode_text(ids)[1], towers.encode_text(ids)[1])
    with pytest.raises(ValueError):
        load_clip('tiny:{"no_such_option": 1}')


def test_freeze_and_gradient_checkpointing() -> None:
    towers = load_clip("tiny", seed=0)
    frozen = towers.freeze_per_spec()
    assert frozen and all(any(n.startswith(p) for p in FROZEN_PREFIXES) for n in frozen)
    towers.set_gradient_checkpointing(True)
    towers.train()
    ids = torch.tensor([[49406, 320, 1125, 49407]])
    sentence, _ = towers.encode_text(ids)
    frames = towers.encode_frames(torch.randn(1, 2, 3, 32, 32))
    (sentence.sum() + frames.sum()).backward()
    for name, param in towers.model.named_parameters():
        if name in frozen:
            assert param.grad is None, name
        elif name.startswith(("text_model.encoder.layers.0.", "vision_model.encoder.layers.0.")):
            assert param.grad is not None and param.grad.abs().sum() > 0, name


def test_attention_kernel_follows_the_device_and_can_be_chosen() -> None:
    from pipeline.models.clip import attention_implementation  # noqa: PLC0415

    assert attention_implementation() == ("sdpa" if torch.cuda.is_available() else "eager")
    assert attention_implementation("sdpa") == "sdpa"
    with pytest.raises(ValueError, match="'sdpa' or 'eager'"):
        attention_implementation("flash")
    eager, sdpa = (load_clip("tiny", seed=0, attention=a) for a in ("eager", "sdpa"))
    assert eager.model.config._attn_implementation == "eager"
    assert sdpa.model.config._attn_implementation == "sdpa"
    pixels = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    ids = torch.tensor([[49406, 320, 1125, 49407] + [0] * 4] * 2)
    with torch.no_grad():  # the same maths: eager and SDPA agree to float32 rounding
        torch.testing.assert_close(eager.encode_frames(pixels.unsqueeze(1)),
                                   sdpa.encode_frames(pixels.unsqueeze(1)), rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(eager.encode_text(ids)[0], sdpa.encode_text(ids)[0],
                                   rtol=1e-5, atol=1e-5)
