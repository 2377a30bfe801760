"""Importing a TS2-Net teacher checkpoint released with the official TeachCLIP code (teachers §2.8).

Why its own module: the teacher (``ts2net.py``) is the method; this is the file-format mapping
(``attn.net`` renames, the unused prompt/token-selector weights dropped explicitly, the
official seqTransf keys), which only ``teachclip teacher import`` needs.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from torch import Tensor

from pipeline.models.clip import ClipTowers, load_clip, load_hf_state_dict
from pipeline.models.convert import convert_resblock, openai_state_dict_to_hf
from pipeline.models.teachers.ts2net import TS2NetTeacher

#: Official checkpoint prefixes that TS2-Net builds but never uses in its similarity; dropped on
#: import, explicitly (any other unknown key is an error).
TS2NET_UNUSED_PREFIXES: tuple[str, ...] = ("visual_prompt_encoder.", "text_token_selector.")

_ATTN_NET = re.compile(r"^(clip\.visual\.transformer\.resblocks\.\d+\.attn)\.net\.")


def rename_attn_net(state: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """Upstream's rename ``…resblocks.N.attn.net.* → …attn.*`` (shift-wrapped MHA weights).

    Why it matters: the TeachCLIP loader skips it and silently falls back to vanilla CLIP
    attention in the shifted blocks (teachers §2.2); a faithful import must apply it.
    """
    return {_ATTN_NET.sub(r"\1.", k): v for k, v in state.items()}


def split_ts2net_state(
    state: Mapping[str, Tensor],
) -> tuple[dict[str, Tensor], dict[str, Tensor], dict[str, Tensor], list[str]]:
    """Split an official TS2-Net state dict into (clip OpenAI sd without ``clip.``, temporal
    official keys, selector keys under our names, ignored keys). Unknown keys raise ValueError.
    """
    clip: dict[str, Tensor] = {}
    temporal: dict[str, Tensor] = {}
    selector: dict[str, Tensor] = {}
    ignored: list[str] = []
    unknown: list[str] = []
    for key, value in rename_attn_net(state).items():
        if key.startswith("clip."):
            clip[key[len("clip.") :]] = value
        elif key == "frame_position_embeddings.weight" or key.startswith("transformerClip."):
            temporal[key] = value
        elif key.startswith("visual_token_selector.score_predictor."):
            selector[key] = value
        elif key.startswith(TS2NET_UNUSED_PREFIXES):
            ignored.append(key)
        else:
            unknown.append(key)
    if unknown:
        raise ValueError(f"unexpected keys in TS2-Net checkpoint: {sorted(unknown)[:20]}")
    return clip, temporal, selector, sorted(ignored)


def temporal_state_from_official(state: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """``frame_position_embeddings`` + ``transformerClip.resblocks.N.*`` (OpenAI MHA layout) →
    ``TemporalTransformer`` names (HF-style, via the shared ``convert.convert_resblock``).
    """
    out: dict[str, Tensor] = {}
    pattern = re.compile(r"^transformerClip\.resblocks\.(\d+)\.(.+)$")
    for key, value in state.items():
        value = value.float()
        if key == "frame_position_embeddings.weight":
            out["position_embedding.weight"] = value
            continue
        match = pattern.match(key)
        try:
            if match is None:
                raise KeyError(key)
            out.update(convert_resblock(match.group(2), value, f"layers.{match.group(1)}."))
        except KeyError:
            raise ValueError(f"unexpected seqTransf key {key!r} in TS2-Net checkpoint") from None
    return out


def load_official_ts2net_state(
    teacher: TS2NetTeacher, state: Mapping[str, Tensor], *, require_clip: bool = True
) -> list[str]:
    """Load an official TS2-Net ``state_dict`` into ``teacher`` strictly; returns ignored keys.

    ``clip.*`` (OpenAI names, after the ``attn.net`` rename) is converted with
    ``convert.openai_state_dict_to_hf``; the teacher's CLIP must have the same shape. Strict on
    purpose: a skipped key would leave random or vanilla weights inside an "imported" teacher.
    """
    clip_sd, temporal_sd, selector_sd, ignored = split_ts2net_state(state)
    if clip_sd:
        _, hf_sd = openai_state_dict_to_hf(clip_sd)
        load_hf_state_dict(teacher.clip.model, hf_sd, source="TS2-Net checkpoint")
    elif require_clip:
        raise ValueError("TS2-Net checkpoint has no clip.* weights")
    if not temporal_sd:
        raise ValueError("TS2-Net checkpoint has no seqTransf weights")
    teacher.temporal.load_state_dict(temporal_state_from_official(temporal_sd), strict=True)
    prefix = "visual_token_selector."
    selector = {k[len(prefix):]: v.float() for k, v in selector_sd.items()}
    teacher.visual_token_selector.load_state_dict(selector, strict=True)
    return ignored


def towers_from_official(
    clip_openai: Mapping[str, Tensor],
    clip_source: str | None,
    *,
    text_heads: int | None = None,
    vision_heads: int | None = None,
) -> ClipTowers:
    """CLIP towers shaped like the checkpoint's ``clip.*`` weights (or from ``clip_source``)."""
    if clip_openai:
        config, _ = openai_state_dict_to_hf(
            clip_openai, text_heads=text_heads, vision_heads=vision_heads
        )
        return ClipTowers(config)
    if clip_source is None:
        raise ValueError("checkpoint has no clip.* weights and no clip_source was given")
    return load_clip(clip_source)


def import_official_ts2net(
    state: Mapping[str, Tensor],
    *,
    clip_source: str | None = None,
    max_words: int | None = None,
    max_frames: int | None = None,
    official_masking: bool = True,
    token_shift: bool | None = None,
    text_heads: int | None = None,
    vision_heads: int | None = None,
    temporal_heads: int | None = None,
    **options: Any,
) -> TS2NetTeacher:
    """Importer for ``checkpoint.import_official("ts2net", …)`` (teachers §2.8).

    ``token_shift=None`` decides from the checkpoint: ``attn.net.*`` keys mean the weights were
    trained with upstream's shift, so it is switched on; a TeachCLIP-port checkpoint (plain
    ``attn.*``) runs without it, as it was trained. ``max_words``/``max_frames`` only size
    inputs (no TS2-Net weight depends on them); unset, they take the official 32/12.
    """
    renamed = rename_attn_net(state)
    clip_sd, temporal_sd, _, _ = split_ts2net_state(renamed)
    if token_shift is None:
        token_shift = any(_ATTN_NET.match(k) for k in state)
    layers = {k.split(".")[2] for k in temporal_sd if k.startswith("transformerClip.")}
    towers = towers_from_official(
        clip_sd, clip_source, text_heads=text_heads, vision_heads=vision_heads
    )
    teacher = TS2NetTeacher(
        towers,
        32 if max_words is None else max_words,
        12 if max_frames is None else max_frames,
        temporal_layers=len(layers),
        temporal_heads=temporal_heads,
        official_masking=official_masking,
        token_shift=token_shift,
        init_temporal_from_clip=False,
        **options,
    )
    load_official_ts2net_state(teacher, renamed, require_clip=clip_source is None)
    return teacher.eval()
