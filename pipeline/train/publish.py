"""Turning a finished training work directory into the published model directory.

Why shared: teacher and student runs end the same way — the loop's ``best.pt`` becomes
``model.pt`` with the run's provenance, the resume state goes, the logs exist (``dvc plots``
expects them even when empty), ``summary.json`` is written and the directory is moved onto its
real name in one step, so ``<out>`` is always either the old or the complete new result.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pipeline.atomic import SUMMARY_FILE, publish_dir, sha256_file, write_json_atomic
from pipeline.models.checkpoint import MODEL_FILE, load_model, save_model
from pipeline.train.loop import BEST_FILE, STATE_FILE, TRAIN_LOG, VAL_LOG


def publish_trained(work: Path, out: Path, *, provenance: Mapping[str, Any],
                    summary: dict[str, Any]) -> Any:
    """Publish ``work`` as ``out``; returns the best model. ``provenance`` goes into the
    checkpoint's ``extra``; ``summary`` gains ``model_sha256`` and is written beside it."""
    best = work / BEST_FILE
    if not best.exists():
        raise RuntimeError(f"{work}: training finished without a best checkpoint")
    model, extra = load_model(best)
    save_model(work / MODEL_FILE, model, extra={**extra, **provenance})
    best.unlink()
    (work / STATE_FILE).unlink(missing_ok=True)
    for log in (TRAIN_LOG, VAL_LOG):
        if not (work / log).exists():
            (work / log).write_text("", encoding="utf-8")
    summary["model_sha256"] = sha256_file(work / MODEL_FILE)
    write_json_atomic(work / SUMMARY_FILE, summary)
    publish_dir(work, out)
    return model
