"""Model checkpoints: our own self-describing format, and importers for official releases.

Why self-describing (kind + configs + CLIP config + weights in one file): a checkpoint can be
rebuilt without the command line that trained it, and DVC tracks a single file per model.
Official checkpoints (X-CLIP, later TS2-Net/X-Pool) store CLIP in OpenAI naming under ``clip.``
plus their heads; ``IMPORTERS`` maps a teacher kind to the function that reads its layout.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn
from transformers import CLIPConfig

from pipeline.atomic import atomic_output
from pipeline.errors import InputError, MismatchError
from pipeline.models.clip import ClipTowers, load_clip, load_hf_state_dict
from pipeline.models.convert import convert_resblock, openai_state_dict_to_hf
from pipeline.models.student import Student, StudentConfig
from pipeline.models.teachers import TEACHERS
from pipeline.models.teachers.base import Teacher
from pipeline.models.teachers.ts2net_import import import_official_ts2net
from pipeline.models.teachers.xclip import XCLIP_MATRICES, XClipTeacher
from pipeline.models.teachers.xpool import import_official_xpool
from pipeline.models.temporal import default_heads

FORMAT = "teachclip-model"
FORMAT_VERSION = 1
#: File name of the model inside every model directory (trained, imported or pre-trained).
MODEL_FILE = "model.pt"


def resolve_model_path(path: str | Path) -> Path:
    """A model directory (``<dir>/model.pt``) or a checkpoint file; InputError if neither."""
    path = Path(path)
    if path.is_dir():
        path = path / MODEL_FILE
    if not path.is_file():
        raise InputError("model checkpoint not found (pass a model directory or its model.pt)",
                         file=path)
    return path


def _persistent_state(model: nn.Module) -> dict[str, torch.Tensor]:
    # ``position_ids`` buffers are persistent in some transformers 4.x releases and not in 5.x:
    # leave them out so checkpoints move between versions.
    return {k: v for k, v in model.state_dict().items() if not k.endswith("position_ids")}


def save_model(
    path: str | Path, model: Student | Teacher, extra: Mapping[str, Any] | None = None
) -> None:
    """Write ``model`` (student or teacher) + ``extra`` (JSON-able metadata) atomically."""
    payload = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "kind": model.kind,
        "config": model.config_dict(),
        "clip_config": json.loads(model.clip.config.to_json_string()),
        "state_dict": {k: v.detach().cpu() for k, v in _persistent_state(model).items()},
        # JSON round trip: ``load_model`` reads with ``weights_only=True``, which refuses arbitrary
        # objects (a ``Path`` in a training config would make the checkpoint unreadable).
        "extra": json.loads(json.dumps(dict(extra or {}), default=str)),
    }
    with atomic_output(path) as tmp:
        torch.save(payload, tmp)


def load_strict(model: nn.Module, state: Mapping[str, torch.Tensor], *, source: str) -> None:
    """Load every weight or fail with the lists of missing and unexpected keys."""
    expected = set(_persistent_state(model))
    given = {k for k in state if not k.endswith("position_ids")}
    missing, unexpected = sorted(expected - given), sorted(given - expected)
    if missing or unexpected:
        raise MismatchError(
            "model weights", f"missing: {missing}", f"unexpected: {unexpected}", file=source
        )
    model.load_state_dict({k: state[k] for k in given}, strict=False)


def load_model(
    path: str | Path, map_location: str | torch.device = "cpu"
) -> tuple[Student | Teacher, dict[str, Any]]:
    """Rebuild the model saved by ``save_model``; returns (model in eval mode, extra)."""
    path = Path(path)
    payload = torch.load(path, map_location=map_location, weights_only=True)
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise InputError("not a teachclip model checkpoint", file=path)
    if payload.get("format_version") != FORMAT_VERSION:
        raise MismatchError(
            "checkpoint format_version", FORMAT_VERSION, payload.get("format_version"), file=path
        )
    towers = ClipTowers(CLIPConfig.from_dict(payload["clip_config"]))
    kind = payload["kind"]
    config = dict(payload["config"])
    model: Student | Teacher
    if kind == Student.kind:
        model = Student(towers, StudentConfig(**config))
    elif kind in TEACHERS:
        model = TEACHERS[kind](towers, **config)
    else:
        raise InputError(f"unknown model kind {kind!r}", file=path)
    load_strict(model, payload["state_dict"], source=str(path))
    model.eval()
    return model, dict(payload.get("extra", {}))


# ---------------------------------------------------------------------------- official imports
Importer = Callable[..., Teacher]
IMPORTERS: dict[str, Importer] = {}


def register_importer(kind: str) -> Callable[[Importer], Importer]:
    """Decorator: ``@register_importer("ts2net")`` makes ``import_official("ts2net", ...)`` work.

    An importer is called as
    ``fn(state, clip_source=..., max_words=..., max_frames=..., **options)`` with the raw
    official state dict; it returns a Teacher.
    """

    def wrap(fn: Importer) -> Importer:
        IMPORTERS[kind] = fn
        return fn

    return wrap


register_importer("ts2net")(import_official_ts2net)  # TS2-Net layout: teachers/ts2net.py
register_importer("xpool")(import_official_xpool)  # X-Pool layout: teachers/xpool.py


def read_official_state(path: str | Path) -> dict[str, torch.Tensor]:
    """Load an official checkpoint's state dict (plain, ``{'state_dict': ...}``, ``module.``)."""
    path = Path(path)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - surface as input error
        raise InputError(f"cannot read checkpoint: {exc}", file=path) from exc
    if isinstance(state, Mapping) and isinstance(state.get("state_dict"), Mapping):
        state = state["state_dict"]
    if not isinstance(state, Mapping):
        raise InputError(f"expected a state dict, found {type(state).__name__}", file=path)
    if state and all(k.startswith("module.") for k in state):  # saved from DistributedDataParallel
        state = {k[len("module.") :]: v for k, v in state.items()}
    return dict(state)


def import_official(
    kind: str,
    path: str | Path,
    clip_source: str | None = None,
    max_words: int | None = None,
    max_frames: int | None = None,
    **options: Any,
) -> Teacher:
    """Import a released official teacher checkpoint (``clip.*`` OpenAI naming + heads).

    Imported teachers default to ``official_masking=True`` so their scores match the release.
    ``clip_source`` is used only when the checkpoint carries no ``clip.*`` weights.
    """
    if kind not in IMPORTERS:
        raise InputError(f"no importer for teacher kind {kind!r}; known: {sorted(IMPORTERS)}")
    state = read_official_state(path)
    try:
        return IMPORTERS[kind](
            state, clip_source=clip_source, max_words=max_words, max_frames=max_frames, **options
        )
    except (ValueError, KeyError) as exc:
        raise InputError(f"cannot import {kind} checkpoint: {exc}", file=path) from exc


def official_clip(
    state: Mapping[str, torch.Tensor],
    clip_source: str | None,
    *,
    text_heads: int | None = None,
    vision_heads: int | None = None,
) -> tuple[ClipTowers, set[str]]:
    """Build CLIP towers from the ``clip.*`` entries (or ``clip_source``); returns the used keys."""
    clip_keys = {k for k in state if k.startswith("clip.")}
    if clip_keys:
        config, hf = openai_state_dict_to_hf(
            {k: state[k] for k in clip_keys}, text_heads=text_heads, vision_heads=vision_heads
        )
        towers = ClipTowers(config)
        load_hf_state_dict(towers.model, hf, source="checkpoint clip.*")
        return towers, clip_keys
    if clip_source is None:
        raise ValueError("checkpoint has no clip.* weights and no clip_source was given")
    return load_clip(clip_source), set()


def official_seq_transf(
    state: Mapping[str, torch.Tensor], target_prefix: str
) -> tuple[dict[str, torch.Tensor], set[str], int]:
    """Map official seqTransf keys (``frame_position_embeddings``, ``transformerClip.resblocks``).

    Returns (our state-dict entries under ``target_prefix``, the official keys used, #layers).
    """
    out: dict[str, torch.Tensor] = {}
    used: set[str] = set()
    if "frame_position_embeddings.weight" in state:
        out[f"{target_prefix}position_embedding.weight"] = state[
            "frame_position_embeddings.weight"
        ].float()
        used.add("frame_position_embeddings.weight")
    layers = set()
    pattern = re.compile(r"^transformerClip\.resblocks\.(\d+)\.(.+)$")
    for key, value in state.items():
        m = pattern.match(key)
        if not m:
            continue
        layers.add(int(m.group(1)))
        try:
            out.update(
                convert_resblock(m.group(2), value.float(), f"{target_prefix}layers.{m.group(1)}.")
            )
        except KeyError:
            continue  # left unused: reported as unknown by the caller
        used.add(key)
    return out, used, len(layers)


@register_importer("xclip")
def import_xclip(
    state: Mapping[str, torch.Tensor],
    *,
    clip_source: str | None = None,
    max_words: int | None = None,
    max_frames: int | None = None,
    official_masking: bool = True,
    temporal_heads: int | None = None,
    text_heads: int | None = None,
    vision_heads: int | None = None,
    **options: Any,
) -> XClipTeacher:
    """Official X-CLIP layout: ``clip.*`` + the 8 matrices + seqTransf keys (teachers §1.2)."""
    missing = [name for name in XCLIP_MATRICES if name not in state]
    if missing:
        raise ValueError(f"missing X-CLIP matrices: {missing}")
    words = int(state["word_logit_weight"].shape[0])
    frames = int(state["frame_logit_weight"].shape[0])
    if max_words is not None and max_words != words:
        raise MismatchError("X-CLIP max_words", max_words, words)
    if max_frames is not None and max_frames != frames:
        raise MismatchError("X-CLIP max_frames", max_frames, frames)
    towers, used = official_clip(
        state, clip_source, text_heads=text_heads, vision_heads=vision_heads
    )
    temporal_state, temporal_used, n_layers = official_seq_transf(state, "temporal.")
    used |= temporal_used
    used |= set(XCLIP_MATRICES)
    unknown = sorted(set(state) - used)
    if unknown:
        raise ValueError(f"unknown keys in X-CLIP checkpoint: {unknown}")
    teacher = XClipTeacher(
        towers,
        words,
        frames,
        temporal_layers=n_layers,
        temporal_heads=temporal_heads or default_heads(towers.embed_dim),
        official_masking=official_masking,
        init_temporal_from_clip=False,
        **options,
    )
    full = {f"clip.{k}": v for k, v in _persistent_state(towers).items()}
    full.update(temporal_state)
    full.update({f"head.{name}": state[name].float() for name in XCLIP_MATRICES})
    load_strict(teacher, full, source="X-CLIP checkpoint")
    return teacher
