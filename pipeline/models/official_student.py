"""Import a student trained by the official TeachCLIP code into our ``Student`` and model format.

Why: a lab that trained TeachCLIP with the official scripts holds ``pytorch_model.bin.N`` files
(``torch.save(model.state_dict())`` of ``modules/modeling.py: CLIP4Clip``) and wants to evaluate,
index and search them with this toolkit without retraining.

The official layout (loose type, ``sim_header`` seqTransf or meanP):

=======================================  =========================================================
official key                             ours
=======================================  =========================================================
``clip.*`` (OpenAI naming; linear, conv,  ``clip.model.*`` (Hugging Face naming, float32), via
attention and projection weights fp16)   :func:`pipeline.models.checkpoint.official_clip`
``frame_position_embeddings.weight``     ``temporal.position_embedding.weight`` (seqTransf only)
``transformerClip.resblocks.N.*``        ``temporal.layers.N.*`` (seqTransf only)
``frameLinear.{weight,bias}``            ``afa.frame_linear.*``
``frameLinear2.{weight,bias}``           ``afa.frame_linear2.*``
=======================================  =========================================================

Every key must be accounted for (an unknown one, e.g. a seqLSTM or tightTransf head, a 3-D patch
conv, or a teacher's matrices, is an error naming it), and every weight of the ``Student`` must be
filled. The student is written with :func:`pipeline.models.checkpoint.save_model` into
``OUT/model.pt`` plus ``summary.json``, the layout ``teachclip evaluate --model OUT`` and the index
commands read. Deliberate difference once imported: our AFA gives padded frames weight 0 (the
official one ignores the mask), so videos shorter than F frames embed differently.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from pipeline.atomic import publish_dir, sha256_file, tmp_path_for, write_text_atomic
from pipeline.errors import InputError
from pipeline.models.checkpoint import (
    load_strict,
    official_clip,
    official_seq_transf,
    read_official_state,
    save_model,
)
from pipeline.models.student import Student, StudentConfig
from pipeline.models.temporal import default_heads

#: Files of an imported student's directory (what ``teachclip evaluate --model DIR`` opens).
MODEL_FILE = "model.pt"
SUMMARY_FILE = "summary.json"

#: Official AFA parameter names → ours.
AFA_KEYS: dict[str, str] = {
    "frameLinear.weight": "afa.frame_linear.weight",
    "frameLinear.bias": "afa.frame_linear.bias",
    "frameLinear2.weight": "afa.frame_linear2.weight",
    "frameLinear2.bias": "afa.frame_linear2.bias",
}

#: Max words the official configs use for sentence captions (64 for paragraph datasets).
DEFAULT_MAX_WORDS = 32


def official_student_from_state(
    state: Mapping[str, torch.Tensor],
    *,
    clip_source: str | None = None,
    afa_temperature: float = 0.1,
    temporal_heads: int | None = None,
    text_heads: int | None = None,
    vision_heads: int | None = None,
) -> Student:
    """Build our ``Student`` from an official CLIP4Clip+AFA state dict (layout: module docstring).

    The temporal module is seqTransf when the state dict has ``transformerClip`` blocks (their
    number = ``temporal_layers``) and meanP when it has none. Heads default to width/64, as the
    official code infers them. Raises ``ValueError`` naming missing or unknown keys.
    """
    missing = [key for key in AFA_KEYS if key not in state]
    if missing:
        raise ValueError(f"missing AFA weights {missing}: not a TeachCLIP student checkpoint")
    towers, used = official_clip(state, clip_source, text_heads=text_heads,
                                 vision_heads=vision_heads)
    temporal_state, temporal_used, n_layers = official_seq_transf(state, "temporal.")
    if temporal_used and n_layers == 0:
        raise ValueError("frame_position_embeddings without transformerClip blocks (a seqLSTM "
                         "student?): only seqTransf and meanP students can be imported")
    used |= temporal_used | set(AFA_KEYS)
    unknown = sorted(set(state) - used)
    if unknown:
        raise ValueError(f"unknown keys in the student checkpoint: {unknown[:20]}"
                         f"{' …' if len(unknown) > 20 else ''}")
    config = StudentConfig(
        temporal="seqTransf" if n_layers else "meanP",
        aggregation="afa",
        afa_temperature=afa_temperature,
        temporal_layers=n_layers or StudentConfig.temporal_layers,
        temporal_heads=temporal_heads or default_heads(towers.embed_dim),
    )
    student = Student(towers, config)
    full = {f"clip.{k}": v for k, v in towers.state_dict().items()}
    full.update(temporal_state)
    full.update({ours: state[theirs].float() for theirs, ours in AFA_KEYS.items()})
    load_strict(student, full, source="official student checkpoint")
    return student.eval()


def import_official_student(path: str | Path, **options: Any) -> Student:
    """Read ``path`` (``pytorch_model.bin.N``, plain or ``module.``-prefixed) into a ``Student``;
    any layout problem becomes an ``InputError`` naming the file."""
    state = read_official_state(path)
    try:
        return official_student_from_state(state, **options)
    except (ValueError, KeyError) as exc:
        raise InputError(f"cannot import the official student checkpoint: {exc}; expected a "
                         f"state dict saved by the official TeachCLIP train.py "
                         f"(pytorch_model.bin.N)", file=path) from exc


def import_student(
    checkpoint: str | Path,
    out_dir: str | Path,
    *,
    clip_source: str | None = None,
    max_words: int = DEFAULT_MAX_WORDS,
    afa_temperature: float = 0.1,
    name: str | None = None,
    **options: Any,
) -> dict[str, Any]:
    """Convert an official student checkpoint into ``out_dir/model.pt`` + ``summary.json``.

    ``max_words`` is the caption length the student was trained with (the weights do not record
    it; evaluation tokenises with it). ``summary.json`` records the source path and sha256, so
    metrics of the import trace back to the exact file. The directory is published atomically.
    """
    checkpoint = Path(checkpoint)
    if not checkpoint.is_file():
        raise InputError("checkpoint not found: give the official pytorch_model.bin.N file",
                         file=checkpoint)
    if max_words < 2:
        raise InputError(f"max_words must be >= 2 (start and end tokens), got {max_words}",
                         file=checkpoint)
    if not afa_temperature > 0:
        raise InputError(f"afa_temperature must be > 0, got {afa_temperature}", file=checkpoint)
    source_sha = sha256_file(checkpoint)
    student = import_official_student(checkpoint, clip_source=clip_source,
                                      afa_temperature=afa_temperature, **options)
    out = Path(out_dir)
    work = tmp_path_for(out)
    if work.exists():
        shutil.rmtree(work)
    work.mkdir(parents=True)
    provenance = {"source_path": str(checkpoint), "source_sha256": source_sha}
    label = name or out.name
    save_model(work / MODEL_FILE, student, extra={
        "role": "student", "name": label, "imported": provenance,
        "train_config": {"max_words": int(max_words)},
    })
    summary = {
        "name": label,
        "role": "student",
        "kind": student.kind,
        "source": "imported",
        **provenance,
        "max_words": int(max_words),
        "config": student.config_dict(),
        "model_sha256": sha256_file(work / MODEL_FILE),
    }
    write_text_atomic(work / SUMMARY_FILE, json.dumps(summary, indent=2, sort_keys=True) + "\n")
    publish_dir(work, out)
    return summary
