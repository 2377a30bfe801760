"""Metrics files: the numbers in ``<name>.json``, what they were measured on beside it.

Why two files: ``dvc metrics show`` and ``dvc exp show`` print one column per key of a metrics
file, so digests, model names and counts in the same JSON made 600-column lines. The metrics file
therefore holds only the retrieval numbers (R@K, median and mean rank, text→video and
video→text); everything that identifies the measurement (model, kind, role, split, query counts,
checkpoint sha256, frames and manifest digests, the model's path) goes to
``<name>.provenance.json`` in the same directory. Readers merge the two, so ``teachclip report``
still knows each model's role and split; an old single-file metrics JSON still reads.
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import Any

from pipeline.atomic import write_text_atomic
from pipeline.errors import InputError

PROVENANCE_SUFFIX = ".provenance.json"
#: Keys that are retrieval numbers (``R1``, ``v2t_MedianR``, ...); all others are provenance.
_NUMBER_KEY = re.compile(r"^(v2t_)?(R\d+|MedianR|MeanR)$")


def provenance_path(metrics_path: str | Path) -> Path:
    """``a/b.json`` → ``a/b.provenance.json`` (the file beside a metrics file)."""
    path = Path(metrics_path)
    return path.with_name(path.stem + PROVENANCE_SUFFIX)


def is_number_key(key: str) -> bool:
    """True for the keys that belong in the numbers-only metrics file."""
    return bool(_NUMBER_KEY.match(key))


def split_record(record: dict[str, Any]) -> tuple[dict[str, float], dict[str, Any]]:
    """(numbers, provenance) of one evaluation record; numbers must be finite floats."""
    numbers: dict[str, float] = {}
    provenance: dict[str, Any] = {}
    for key, value in record.items():
        if is_number_key(key):
            numbers[key] = float(value)
        else:
            provenance[key] = value
    if "R1" not in numbers:
        raise ValueError("an evaluation record must hold at least R1")
    return numbers, provenance


def write_metrics_files(path: str | Path, record: dict[str, Any]) -> tuple[Path, Path]:
    """Write ``path`` (numbers only) and its provenance file, sorted keys, atomically.

    The provenance is written first so that a metrics file on disk always has its provenance
    beside it. No time stamps go into either file: a rerun with the same result is unchanged.
    """
    numbers, provenance = split_record(record)
    path = Path(path)
    prov = provenance_path(path)
    write_text_atomic(prov, json.dumps(provenance, indent=2, sort_keys=True) + "\n")
    write_text_atomic(path, json.dumps(numbers, indent=2, sort_keys=True) + "\n")
    return path, prov


def _read_json(path: Path, what: str) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise InputError(f"{what} not found", file=path) from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise InputError(f"{what} is not valid JSON ({exc}); re-run the stage that wrote it",
                         file=path) from exc
    if not isinstance(data, dict):
        raise InputError(f"{what} must hold a JSON object, got {type(data).__name__}",
                         file=path)
    return data


def read_metrics_files(path: str | Path) -> dict[str, Any]:
    """The merged record of a metrics file and its provenance (absent provenance: numbers only).

    Raises InputError naming the file when it is missing, not JSON, lacks ``R1`` or holds a
    metric that is not a number.
    """
    path = Path(path)
    numbers = _read_json(path, "metrics file")
    if "R1" not in numbers:
        raise InputError("not a teachclip metrics file (no 'R1'); write it with `teachclip "
                         "evaluate` or `teachclip teacher score`", file=path)
    for key, value in numbers.items():
        if is_number_key(key) and not (isinstance(value, (int, float))
                                       and not isinstance(value, bool)
                                       and math.isfinite(float(value))):
            raise InputError(f"metric {key!r} is {value!r}, not a finite number", file=path)
    prov = provenance_path(path)
    provenance = _read_json(prov, "provenance file") if prov.is_file() else {}
    return {**provenance, **numbers}
