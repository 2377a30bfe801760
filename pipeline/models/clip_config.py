"""CLIP configurations built from sizes: the embedded tiny CLIP and OpenAI-style configs.

Why its own module: both the towers (``clip.py``) and the OpenAI→HF converter (``convert.py``)
need the same conventions that no state dict stores (QuickGELU, LN eps, special ids); keeping
them here lets ``clip.py`` import the converter without an import cycle.
"""

from __future__ import annotations

import math
from typing import Any

from transformers import CLIPConfig

#: Sizes of the embedded tiny CLIP (tests and the synthetic default). The vocabulary is the real
#: CLIP BPE size so the shipped tokenizer works; text width == projection dim so seqTransf can be
#: initialised from the text positional embedding and text layers (method §2.3).
TINY_DEFAULTS: dict[str, Any] = {
    "text_width": 64,
    "text_layers": 2,
    "text_heads": 4,
    "context_length": 77,
    "vocab_size": 49408,
    "vision_width": 64,
    "vision_layers": 2,
    "vision_heads": 4,
    "image_size": 32,
    "patch_size": 8,
    "projection_dim": 64,
    "logit_scale_init": math.log(1 / 0.07),
}


def clip_config_from_sizes(
    *,
    text_width: int,
    text_layers: int,
    text_heads: int,
    context_length: int,
    vocab_size: int,
    vision_width: int,
    vision_layers: int,
    vision_heads: int,
    image_size: int,
    patch_size: int,
    projection_dim: int,
    logit_scale_init: float = math.log(1 / 0.07),
    layer_norm_eps: float = 1e-5,
) -> CLIPConfig:
    """Build an OpenAI-style ``CLIPConfig`` (QuickGELU, MLP 4×width, SOT/EOT ids at the top).

    Used both by the tiny config and by the OpenAI→HF converter so that the two agree on every
    convention that is not stored in a state dict (activation, LN eps, special ids).
    """
    text = {
        "vocab_size": vocab_size,
        "hidden_size": text_width,
        "intermediate_size": 4 * text_width,
        "num_hidden_layers": text_layers,
        "num_attention_heads": text_heads,
        "max_position_embeddings": context_length,
        "hidden_act": "quick_gelu",
        "layer_norm_eps": layer_norm_eps,
        "bos_token_id": vocab_size - 2,
        "eos_token_id": vocab_size - 1,
        "pad_token_id": 0,
    }
    vision = {
        "hidden_size": vision_width,
        "intermediate_size": 4 * vision_width,
        "num_hidden_layers": vision_layers,
        "num_attention_heads": vision_heads,
        "image_size": image_size,
        "patch_size": patch_size,
        "hidden_act": "quick_gelu",
        "layer_norm_eps": layer_norm_eps,
    }
    return CLIPConfig(
        text_config=text,
        vision_config=vision,
        projection_dim=projection_dim,
        logit_scale_init_value=logit_scale_init,
    )


def tiny_clip_config(**overrides: Any) -> CLIPConfig:
    """The embedded tiny CLIP (``TINY_DEFAULTS`` with ``overrides`` applied by key)."""
    unknown = set(overrides) - set(TINY_DEFAULTS)
    if unknown:
        raise ValueError(
            f"unknown tiny CLIP option(s) {sorted(unknown)}; known: {sorted(TINY_DEFAULTS)}"
        )
    return clip_config_from_sizes(**{**TINY_DEFAULTS, **overrides})
