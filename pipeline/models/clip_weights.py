"""The user's CLIP weights as the pipeline's CLIP directory, with the digest of their source.

Why a stage of its own: every teacher and student starts from the same CLIP, so the pipeline
keeps one Hugging Face directory (``paths.clip``) that DVC tracks. Labs hold OpenAI ``.pt`` files
or Hugging Face directories; both are converted once here, and ``summary.json`` records the
source path and its sha256, so a shared cache can be traced back to the exact weights.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from pipeline.atomic import SUMMARY_FILE, publish_dir, sha256_tree, tmp_path_for, write_json_atomic
from pipeline.errors import InputError
from pipeline.models.clip import load_clip


def export_clip_weights(source: str | Path, out_dir: str | Path) -> dict[str, Any]:
    """Load CLIP weights (HF directory or OpenAI state dict) and publish them at ``out_dir`` in
    the Hugging Face layout; returns the summary written beside them."""
    source, out = Path(source), Path(out_dir)
    if not source.exists():
        raise InputError("CLIP weights not found: put an OpenAI .pt file or a Hugging Face CLIP "
                         "directory there (clip.prepare.source)", file=source)
    try:
        towers = load_clip(str(source))
    except (FileNotFoundError, ValueError, RuntimeError, OSError) as exc:
        raise InputError(f"cannot load CLIP weights: {exc}", file=source) from None
    work = tmp_path_for(out)
    if work.exists():
        shutil.rmtree(work)
    towers.model.save_pretrained(work)
    config = towers.config
    summary = {"source_path": str(source), "source_sha256": sha256_tree(source),
               "embed_dim": int(towers.embed_dim), "image_size": int(towers.image_size),
               "context_length": int(towers.context_length),
               "vision_layers": int(config.vision_config.num_hidden_layers),
               "text_layers": int(config.text_config.num_hidden_layers)}
    write_json_atomic(work / SUMMARY_FILE, summary)
    publish_dir(work, out)
    return summary
