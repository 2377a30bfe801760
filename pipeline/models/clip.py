"""CLIP towers shared by the student and every teacher (method §2.1–2.2, teachers §0).

Why a wrapper around ``transformers.CLIPModel``: every model in the project needs the same three
things from CLIP (per-token text features, per-frame CLS features, per-frame patch tokens), with the
official conventions (causal text encoder that ignores the padding mask, final LN + projection at
every position, sentence = EOT position = ``argmax(ids)``). The HF convenience methods changed
their return types in transformers 5 (``get_text_features`` returns a ModelOutput), so the
submodules (``text_model``, ``vision_model``, the projections) are called directly: this works on
4.x and 5.x alike.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn
from transformers import CLIPConfig, CLIPModel

from pipeline.errors import InputError
from pipeline.models.clip_config import tiny_clip_config
from pipeline.models.convert import load_openai_state_dict, openai_state_dict_to_hf

#: Upper bound of log λ (λ ≤ 100), applied after every optimiser step of every model.
MAX_LOGIT_SCALE = math.log(100.0)

#: Parameter-name prefixes (inside ``CLIPModel``) that method §6 keeps frozen: token/position
#: embeddings, the patch-embedding conv, the class embedding, the vision position embedding and
#: the pre-layernorm. They are excluded from optimiser groups and never receive gradients.
FROZEN_PREFIXES: tuple[str, ...] = (
    "text_model.embeddings.token_embedding.",
    "text_model.embeddings.position_embedding.",
    "vision_model.embeddings.patch_embedding.",
    "vision_model.embeddings.class_embedding",
    "vision_model.embeddings.position_embedding.",
    "vision_model.pre_layrnorm.",
)

def attention_implementation(requested: str | None = None) -> str:
    """SDPA where CUDA is available, the eager (matmul) attention elsewhere; the same maths.

    ``requested`` ("sdpa" / "eager") overrides the choice (``bench/attention.py`` times both).

    Why not SDPA everywhere: on the CPU its flash kernel is slow on CLIP's short sequences (17
    image tokens at the embedded default's 32 px, 50 for ViT-B/32); a training step of the
    default's student took 0.38 s with SDPA and 0.34 s eager on 2 cores (2026-12-04,
    ``bench/train_step.py``'s set-up). On a GPU SDPA is faster and lighter (PR #31940).
    """
    if requested is not None:
        if requested not in ("sdpa", "eager"):
            raise ValueError(f"attention must be 'sdpa' or 'eager', got {requested!r}")
        return requested
    return "sdpa" if torch.cuda.is_available() else "eager"


class ClipTowers(nn.Module):
    """Text and vision towers of one CLIP with the official feature conventions.

    The underlying ``CLIPModel`` is kept as ``self.model`` so that state-dict keys read
    ``<owner>.clip.model.text_model...`` and checkpoints stay loadable across transformers versions.
    """

    def __init__(
        self,
        config: CLIPConfig,
        *,
        gradient_checkpointing: bool = False,
        model: CLIPModel | None = None,
        attention: str | None = None,
    ) -> None:
        super().__init__()
        if model is None:
            model = CLIPModel._from_config(config,
                                           attn_implementation=attention_implementation(attention))
        self.model: CLIPModel = model
        self.gradient_checkpointing = False
        self.set_gradient_checkpointing(gradient_checkpointing)

    # ------------------------------------------------------------------ properties
    @property
    def config(self) -> CLIPConfig:
        """The ``CLIPConfig`` this model was built from (saved in checkpoints)."""
        return self.model.config

    @property
    def embed_dim(self) -> int:
        """Joint embedding width D (projection dim)."""
        return int(self.model.config.projection_dim)

    @property
    def text_width(self) -> int:
        """Hidden width of the text transformer (must equal D for seqTransf initialisation)."""
        return int(self.model.config.text_config.hidden_size)

    @property
    def context_length(self) -> int:
        """Number of text positions (77 for OpenAI CLIP): an upper bound on max_words."""
        return int(self.model.config.text_config.max_position_embeddings)

    @property
    def image_size(self) -> int:
        """Input resolution the vision tower expects (frames are resized to this)."""
        return int(self.model.config.vision_config.image_size)

    @property
    def logit_scale(self) -> nn.Parameter:
        """log λ; callers use ``logit_scale.exp()`` and clamp it to ≤ ln 100 after each step."""
        return self.model.logit_scale

    @torch.no_grad()
    def clamp_logit_scale(self) -> None:
        """Keep λ ≤ 100 after every optimiser step, as CLIP and TeachCLIP do (every model)."""
        self.model.logit_scale.clamp_(max=MAX_LOGIT_SCALE)

    # ------------------------------------------------------------------ behaviour
    def set_gradient_checkpointing(self, enabled: bool) -> None:
        """Trade compute for memory in both towers (non-reentrant, so frozen inputs are fine)."""
        # transformers ≥ 5.x renamed the API (the old names warn); 4.x only has the old one.
        if hasattr(self.model, "activation_checkpointing_enable"):
            enable = self.model.activation_checkpointing_enable
            kwargs = {"activation_checkpointing_kwargs": {"use_reentrant": False}}
            disable = self.model.activation_checkpointing_disable
        else:
            enable = self.model.gradient_checkpointing_enable
            kwargs = {"gradient_checkpointing_kwargs": {"use_reentrant": False}}
            disable = self.model.gradient_checkpointing_disable
        if enabled:
            enable(**kwargs)
        elif self.gradient_checkpointing:
            disable()
        self.gradient_checkpointing = enabled

    def freeze_per_spec(self) -> list[str]:
        """Freeze what method §6 keeps fixed; returns the frozen names (relative to ``model``)."""
        frozen = []
        for name, param in self.model.named_parameters():
            if is_frozen_clip_param(name):
                param.requires_grad_(False)
                frozen.append(name)
        return frozen

    def encode_text(
        self, ids: torch.Tensor, attention_mask: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Return (sentence [B,D], tokens [B,L,D]): final LN + projection at every position.

        ``attention_mask`` is accepted for interface symmetry but deliberately NOT used: the
        official encoder is causal only, so positions up to EOT never see padding anyway and the
        padding positions' features (used by X-CLIP) equal the official ones.
        """
        del attention_mask
        out = self.model.text_model(input_ids=ids)
        tokens = self.model.text_projection(out.last_hidden_state)  # already after final LN
        rows = torch.arange(ids.shape[0], device=ids.device)
        sentence = tokens[rows, ids.argmax(dim=-1)]
        return sentence, tokens

    def _vision(self, pixels: torch.Tensor) -> tuple[torch.Tensor, torch.Size]:
        if pixels.dim() != 5:
            raise ValueError(f"expected pixels [B,F,3,H,W], got shape {tuple(pixels.shape)}")
        lead = pixels.shape[:2]
        dtype = self.model.visual_projection.weight.dtype
        flat = pixels.reshape(-1, *pixels.shape[2:]).to(dtype)
        hidden = self.model.vision_model(pixel_values=flat).last_hidden_state
        return hidden, lead

    def encode_frames(self, pixels: torch.Tensor) -> torch.Tensor:
        """Per-frame features [B,F,D]: post-LN CLS token, projected (method §2.2)."""
        hidden, lead = self._vision(pixels)
        cls = self.model.vision_model.post_layernorm(hidden[:, 0])
        return self.model.visual_projection(cls).reshape(*lead, -1)

    def encode_frame_tokens(self, pixels: torch.Tensor) -> torch.Tensor:
        """All tokens [B,F,1+P,D] after post-LN + projection (TS2-Net keeps the patch tokens)."""
        hidden, lead = self._vision(pixels)
        tokens = self.model.visual_projection(self.model.vision_model.post_layernorm(hidden))
        return tokens.reshape(*lead, *tokens.shape[1:])

    def text_layers(self) -> nn.ModuleList:
        """HF ``CLIPEncoderLayer`` list of the text tower (seqTransf initialisation source)."""
        return self.model.text_model.encoder.layers

    def text_position_embedding(self) -> torch.Tensor:
        """Text positional embedding [context_length, text_width]."""
        return self.model.text_model.embeddings.position_embedding.weight


def is_frozen_clip_param(name: str) -> bool:
    """True for ``CLIPModel`` parameter names that method §6 freezes (relative to the model)."""
    return any(name.startswith(prefix) for prefix in FROZEN_PREFIXES)


def no_weight_decay(name: str) -> bool:
    """Parameters that get no weight decay: biases, norms, logit scale and embeddings.

    Why broader than the official ``'bias' in name``: decaying LayerNorm gains, the temperature or
    lookup tables towards zero has no regularising meaning; this is the usual CLIP fine-tuning rule.
    """
    lowered = name.lower()
    return (
        lowered.endswith("bias")
        or "norm" in lowered
        or "ln_" in lowered
        or "logit_scale" in lowered
        or "embedding" in lowered
    )


def build_param_groups(
    named_params: Iterable[tuple[str, nn.Parameter]],
    *,
    lr: float,
    coef_lr: float,
    weight_decay: float,
    clip_prefix: str = "clip.",
    multipliers: Mapping[str, float] | None = None,
) -> list[dict[str, Any]]:
    """Split parameters into optimiser groups (method §6), shared by the student and teachers.

    CLIP parameters (names starting with ``clip_prefix``) get ``lr·coef_lr``; names starting with
    a key of ``multipliers`` get ``lr·multiplier``; everything else ``lr``. Each of those splits
    into decay / no-decay (``no_weight_decay``). Frozen parameters (``requires_grad=False``) are
    left out so the optimiser never touches them. Groups carry a ``name`` for logging.
    """
    multipliers = dict(multipliers or {})
    groups: dict[tuple[str, bool], dict[str, Any]] = {}
    for name, param in named_params:
        if not param.requires_grad:
            continue
        if name.startswith(clip_prefix):
            family, group_lr = "clip", lr * coef_lr
        else:
            family, group_lr = "new", lr
            for prefix, mult in multipliers.items():
                if name.startswith(prefix):
                    family, group_lr = prefix.rstrip("."), lr * mult
                    break
        decay = not no_weight_decay(name)
        key = (family, decay)
        if key not in groups:
            groups[key] = {
                "name": f"{family}_{'decay' if decay else 'no_decay'}",
                "params": [],
                "lr": group_lr,
                "weight_decay": weight_decay if decay else 0.0,
            }
        groups[key]["params"].append(param)
    return list(groups.values())


def _parse_tiny(source: str) -> dict[str, Any]:
    if source == "tiny":
        return {}
    text = source[len("tiny:") :]
    try:
        overrides = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"bad tiny CLIP overrides {text!r}: {exc}") from exc
    if not isinstance(overrides, dict):
        raise ValueError(f"tiny CLIP overrides must be a JSON object, got {text!r}")
    return overrides


def load_clip(
    source: str | Path,
    *,
    gradient_checkpointing: bool = False,
    seed: int | None = None,
    attention: str | None = None,
) -> ClipTowers:
    """Build CLIP towers from ``source``.

    * ``"tiny"`` or ``"tiny:<json overrides>"``: randomly initialised tiny CLIP (``seed`` makes
      the initialisation reproducible);
    * a directory with ``config.json`` (Hugging Face ``save_pretrained`` layout, loaded offline);
    * a ``.pt``/``.bin``/``.pth`` file with an OpenAI-format state dict (or a TorchScript archive as
      released by OpenAI, or a CLIP4Clip/TeachCLIP checkpoint with ``clip.``-prefixed keys).
    """
    text = str(source)
    if text == "tiny" or text.startswith("tiny:"):
        if seed is not None:
            torch.manual_seed(seed)
        return ClipTowers(
            tiny_clip_config(**_parse_tiny(text)), gradient_checkpointing=gradient_checkpointing,
            attention=attention,
        )
    path = Path(text)
    if path.is_dir():
        if not (path / "config.json").exists():
            raise InputError("no config.json: not a Hugging Face CLIP directory (save one with "
                             "CLIPModel.save_pretrained, or pass an OpenAI .pt file)", file=path)
        hf = CLIPModel.from_pretrained(path, local_files_only=True,
                                       attn_implementation=attention_implementation(attention))
        # transformers 5 loads in the stored dtype ("auto"); keep fp32 master weights (autocast
        # handles mixed precision), as 4.x did by default.
        hf = hf.float()
        return ClipTowers(hf.config, model=hf, gradient_checkpointing=gradient_checkpointing)
    if path.is_file():
        config, hf_sd = openai_state_dict_to_hf(load_openai_state_dict(path))
        towers = ClipTowers(config, gradient_checkpointing=gradient_checkpointing,
                            attention=attention)
        load_hf_state_dict(towers.model, hf_sd, source=str(path))
        return towers
    raise InputError("CLIP weights not found: pass 'tiny', a Hugging Face CLIP directory or an "
                     "OpenAI .pt file (params: paths.clip, made by the clip stage)", file=text)


def load_hf_state_dict(model: CLIPModel, state: Mapping[str, torch.Tensor], *, source: str) -> None:
    """Load a converted state dict strictly, ignoring only non-persistent ``position_ids`` buffers.

    Why strict: a silently skipped key would leave random weights inside an "imported" model.
    """
    expected = set(model.state_dict())
    given = set(state)
    ignorable = {k for k in expected ^ given if k.endswith("position_ids")}
    missing = sorted(expected - given - ignorable)
    unexpected = sorted(given - expected - ignorable)
    if missing or unexpected:
        raise ValueError(
            f"{source}: CLIP weights do not match the model: missing {missing[:20]}"
            f"{' …' if len(missing) > 20 else ''}, unexpected {unexpected[:20]}"
            f"{' …' if len(unexpected) > 20 else ''}"
        )
    model.load_state_dict({k: v for k, v in state.items() if k not in ignorable}, strict=False)
