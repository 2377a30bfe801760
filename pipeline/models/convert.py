"""OpenAI-format CLIP state dict → ``transformers`` ``CLIPConfig`` + state dict.

Why: released CLIP4Clip / X-CLIP / TS2-Net / TeachCLIP checkpoints store their CLIP in OpenAI
naming (``clip.`` prefix). Every size is inferred from tensor shapes, like OpenAI's
``build_model``, so no config file is needed. Key mapping as in transformers'
``convert_clip_original_pytorch_to_hf.py`` (notes/ecosystem.md §4).
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from pathlib import Path

import torch
from transformers import CLIPConfig

from pipeline.models.clip_config import clip_config_from_sizes

#: Non-tensor entries of OpenAI JIT state dicts that carry no weights.
JIT_INT_KEYS = ("input_resolution", "context_length", "vocab_size")

_BLOCK_RE = re.compile(r"^(visual\.)?transformer\.resblocks\.(\d+)\.(.+)$")


def load_openai_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Read an OpenAI-format state dict: plain ``torch.save`` dict or OpenAI's TorchScript archive.

    A ``clip.`` prefix (CLIP4Clip/TeachCLIP checkpoints) is stripped and other keys dropped.
    """
    path = Path(path)
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except (RuntimeError, OSError, ValueError) as exc:  # TorchScript archives (OpenAI release)
        try:
            obj = torch.jit.load(str(path), map_location="cpu").state_dict()
        except Exception:  # noqa: BLE001 - report the original failure
            raise ValueError(f"{path}: not a readable CLIP state dict ({exc})") from exc
    if isinstance(obj, Mapping) and "state_dict" in obj and isinstance(obj["state_dict"], Mapping):
        obj = obj["state_dict"]
    if not isinstance(obj, Mapping):
        raise ValueError(f"{path}: expected a state dict, found {type(obj).__name__}")
    return strip_clip_prefix(obj)


def strip_clip_prefix(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Keep ``clip.*`` keys without the prefix if any exist, else return the dict unchanged."""
    prefixed = {k[len("clip.") :]: v for k, v in state.items() if k.startswith("clip.")}
    return prefixed if prefixed else dict(state)


def _count_blocks(keys: list[str], prefix: str) -> int:
    pattern = re.compile(rf"^{re.escape(prefix)}transformer\.resblocks\.(\d+)\.")
    found = {int(m.group(1)) for k in keys if (m := pattern.match(k))}
    if not found:
        return 0
    if found != set(range(max(found) + 1)):
        raise ValueError(f"{prefix or 'text '}resblocks are not numbered 0..n-1: {sorted(found)}")
    return max(found) + 1


def openai_config(
    sd: Mapping[str, torch.Tensor],
    *,
    text_heads: int | None = None,
    vision_heads: int | None = None,
) -> CLIPConfig:
    """Infer a ``CLIPConfig`` from OpenAI-format shapes (heads = width/64 unless given)."""
    keys = list(sd)
    if "visual.conv1.weight" not in sd:
        if any(k.startswith("visual.layer1") for k in keys):
            raise ValueError("ResNet CLIP visual towers are not supported (ViT only)")
        raise ValueError("not an OpenAI CLIP state dict: no 'visual.conv1.weight'")
    if "visual.conv2.weight" in sd:
        raise ValueError("3D linear patch ('visual.conv2', linear_patch='3d') has no HF equivalent")
    vision_width, _, patch, _ = sd["visual.conv1.weight"].shape
    grid = math.isqrt(sd["visual.positional_embedding"].shape[0] - 1)
    if grid * grid + 1 != sd["visual.positional_embedding"].shape[0]:
        raise ValueError("visual.positional_embedding does not hold 1 + grid² positions")
    text_width = sd["ln_final.weight"].shape[0]
    return clip_config_from_sizes(
        text_width=int(text_width),
        text_layers=_count_blocks(keys, ""),
        text_heads=text_heads or max(1, int(text_width) // 64),
        context_length=int(sd["positional_embedding"].shape[0]),
        vocab_size=int(sd["token_embedding.weight"].shape[0]),
        vision_width=int(vision_width),
        vision_layers=_count_blocks(keys, "visual."),
        vision_heads=vision_heads or max(1, int(vision_width) // 64),
        image_size=int(patch * grid),
        patch_size=int(patch),
        projection_dim=int(sd["text_projection"].shape[1]),
        logit_scale_init=float(sd["logit_scale"]) if "logit_scale" in sd else math.log(1 / 0.07),
    )


_BLOCK_MAP = {
    "ln_1.weight": "layer_norm1.weight",
    "ln_1.bias": "layer_norm1.bias",
    "ln_2.weight": "layer_norm2.weight",
    "ln_2.bias": "layer_norm2.bias",
    "mlp.c_fc.weight": "mlp.fc1.weight",
    "mlp.c_fc.bias": "mlp.fc1.bias",
    "mlp.c_proj.weight": "mlp.fc2.weight",
    "mlp.c_proj.bias": "mlp.fc2.bias",
    "attn.out_proj.weight": "self_attn.out_proj.weight",
    "attn.out_proj.bias": "self_attn.out_proj.bias",
}

_TOP_MAP = {
    "token_embedding.weight": "text_model.embeddings.token_embedding.weight",
    "positional_embedding": "text_model.embeddings.position_embedding.weight",
    "ln_final.weight": "text_model.final_layer_norm.weight",
    "ln_final.bias": "text_model.final_layer_norm.bias",
    "visual.conv1.weight": "vision_model.embeddings.patch_embedding.weight",
    "visual.class_embedding": "vision_model.embeddings.class_embedding",
    "visual.positional_embedding": "vision_model.embeddings.position_embedding.weight",
    "visual.ln_pre.weight": "vision_model.pre_layrnorm.weight",
    "visual.ln_pre.bias": "vision_model.pre_layrnorm.bias",
    "visual.ln_post.weight": "vision_model.post_layernorm.weight",
    "visual.ln_post.bias": "vision_model.post_layernorm.bias",
    "logit_scale": "logit_scale",
}


def convert_resblock(suffix: str, value: torch.Tensor, hf_prefix: str) -> dict[str, torch.Tensor]:
    """Map one OpenAI ``ResidualAttentionBlock`` entry to HF ``CLIPEncoderLayer`` names.

    ``attn.in_proj_*`` is split into q/k/v (``chunk(3)``); shared with the seqTransf importer.
    """
    if suffix in ("attn.in_proj_weight", "attn.in_proj_bias"):
        kind = suffix.rsplit("_", 1)[1]
        q, k, v = value.chunk(3, dim=0)
        return {
            f"{hf_prefix}self_attn.q_proj.{kind}": q,
            f"{hf_prefix}self_attn.k_proj.{kind}": k,
            f"{hf_prefix}self_attn.v_proj.{kind}": v,
        }
    if suffix not in _BLOCK_MAP:
        raise KeyError(suffix)
    return {hf_prefix + _BLOCK_MAP[suffix]: value}


def openai_state_dict_to_hf(
    sd: Mapping[str, torch.Tensor],
    *,
    text_heads: int | None = None,
    vision_heads: int | None = None,
) -> tuple[CLIPConfig, dict[str, torch.Tensor]]:
    """Convert an OpenAI-format CLIP state dict (``clip.`` prefix allowed) to HF naming.

    Every tensor is accounted for: unknown keys raise ``ValueError`` naming them, so a layout
    we do not understand never loads half-way. Tensors are cast to float32 (OpenAI stores fp16).
    """
    sd = {k: v for k, v in strip_clip_prefix(sd).items() if k not in JIT_INT_KEYS}
    config = openai_config(sd, text_heads=text_heads, vision_heads=vision_heads)
    out: dict[str, torch.Tensor] = {}
    unknown: list[str] = []
    for key, value in sd.items():
        value = value.float() if torch.is_floating_point(value) else value
        if key in _TOP_MAP:
            out[_TOP_MAP[key]] = value
        elif key == "text_projection":
            out["text_projection.weight"] = value.T.contiguous()
        elif key == "visual.proj":
            out["visual_projection.weight"] = value.T.contiguous()
        elif m := _BLOCK_RE.match(key):
            tower = "vision_model" if m.group(1) else "text_model"
            prefix = f"{tower}.encoder.layers.{m.group(2)}."
            try:
                out.update(convert_resblock(m.group(3), value, prefix))
            except KeyError:
                unknown.append(key)
        else:
            unknown.append(key)
    if unknown:
        raise ValueError(f"unknown keys in OpenAI CLIP state dict: {sorted(unknown)}")
    return config, out


def hf_state_dict_to_openai(hf: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Inverse mapping (HF → OpenAI naming); used to write official-layout checkpoints in tests."""
    top_inv = {v: k for k, v in _TOP_MAP.items()}
    block_inv = {v: k for k, v in _BLOCK_MAP.items()}
    out: dict[str, torch.Tensor] = {}
    pending: dict[str, dict[str, torch.Tensor]] = {}
    for key, value in hf.items():
        if key.endswith("position_ids"):
            continue
        if key in top_inv:
            out[top_inv[key]] = value
        elif key == "text_projection.weight":
            out["text_projection"] = value.T.contiguous()
        elif key == "visual_projection.weight":
            out["visual.proj"] = value.T.contiguous()
        else:
            m = re.match(r"^(text_model|vision_model)\.encoder\.layers\.(\d+)\.(.+)$", key)
            if not m:
                raise ValueError(f"unexpected HF CLIP key {key!r}")
            prefix = ("visual." if m.group(1) == "vision_model" else "") + (
                f"transformer.resblocks.{m.group(2)}."
            )
            suffix = m.group(3)
            qkv = re.match(r"^self_attn\.([qkv])_proj\.(weight|bias)$", suffix)
            if qkv:
                pending.setdefault(prefix + "attn.in_proj_" + qkv.group(2), {})[qkv.group(1)] = (
                    value
                )
            else:
                out[prefix + block_inv[suffix]] = value
    for key, parts in pending.items():
        out[key] = torch.cat([parts["q"], parts["k"], parts["v"]], dim=0)
    return out
