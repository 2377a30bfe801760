"""Results table of every evaluated model (markdown), optionally aggregated over seeds.

Why seeds: retrieval numbers move by about a point between seeds (the top user complaint about
CLIP4Clip-family results is "cannot reproduce R@1"), so a student-vs-baseline comparison is only
meaningful with the spread next to the mean. Spread = sample standard deviation (ddof 1) or
min–max; the table says which.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.errors import InputError
from pipeline.eval.metrics_file import read_metrics_files

#: (metrics key, column title, decimals, higher is better)
COLUMNS: tuple[tuple[str, str, int, bool], ...] = (
    ("R1", "R@1", 1, True),
    ("R5", "R@5", 1, True),
    ("R10", "R@10", 1, True),
    ("MedianR", "MdR", 1, False),
    ("MeanR", "MnR", 1, False),
    ("v2t_R1", "v2t R@1", 1, True),
)
ROLE_ORDER = {"teacher": 0, "baseline": 1, "student": 2}
SPREADS = ("std", "minmax")


@dataclass
class ModelResult:
    """One table row: a model name and its metrics for one or more seeds."""

    name: str
    runs: list[dict[str, Any]]
    sources: list[Path]

    @property
    def role(self) -> str:
        roles = {str(r.get("role", "student")) for r in self.runs}
        return roles.pop() if len(roles) == 1 else "student"

    @property
    def kind(self) -> str:
        return str(self.runs[0].get("kind", ""))

    def values(self, key: str) -> np.ndarray:
        """The metric over runs (NaN where a run lacks it)."""
        return np.array([float(r.get(key, math.nan)) for r in self.runs], dtype=np.float64)


def load_metrics(path: str | Path) -> dict[str, Any]:
    """One model's metrics merged with the provenance file beside them (role, split, ...)."""
    return read_metrics_files(path)


def parse_spec(spec: str) -> tuple[str, list[Path]]:
    """``name=a.json[,b.json,...]`` (several files = seeds of one model) → (name, paths)."""
    if "=" not in spec:
        raise InputError(f"expected NAME=PATH[,PATH...], got {spec!r}")
    name, _, rest = spec.partition("=")
    paths = [Path(p.strip()) for p in rest.split(",") if p.strip()]
    if not name.strip() or not paths:
        raise InputError(f"expected NAME=PATH[,PATH...], got {spec!r}")
    return name.strip(), paths


def load_results(specs: Sequence[str]) -> list[ModelResult]:
    """Load every ``name=paths`` spec; rows ordered teachers, baselines, students (stable)."""
    results: list[ModelResult] = []
    names: set[str] = set()
    for spec in specs:
        name, paths = parse_spec(spec)
        if name in names:
            raise InputError(f"model name {name!r} given twice")
        names.add(name)
        results.append(ModelResult(name, [load_metrics(p) for p in paths], paths))
    if not results:
        raise InputError("no metrics given")
    return sorted(results, key=lambda r: ROLE_ORDER.get(r.role, 3))


def _cell(values: np.ndarray, decimals: int, spread: str) -> str:
    values = values[~np.isnan(values)]
    if values.size == 0:
        return "–"
    mean = float(values.mean())
    if values.size == 1:
        return f"{mean:.{decimals}f}"
    if spread == "std":
        return f"{mean:.{decimals}f} ± {float(values.std(ddof=1)):.{decimals}f}"
    return f"{mean:.{decimals}f} ({float(values.min()):.{decimals}f}–" \
           f"{float(values.max()):.{decimals}f})"


def summarise(result: ModelResult) -> dict[str, float]:
    """Mean (and spread statistics) of every column for the plot/TSV output."""
    out: dict[str, float] = {}
    for key, _title, _dec, _up in COLUMNS:
        values = result.values(key)
        values = values[~np.isnan(values)]
        out[key] = float(values.mean()) if values.size else math.nan
        out[f"{key}_std"] = float(values.std(ddof=1)) if values.size > 1 else 0.0
        out[f"{key}_min"] = float(values.min()) if values.size else math.nan
        out[f"{key}_max"] = float(values.max()) if values.size else math.nan
    return out


def markdown_table(results: Sequence[ModelResult], spread: str = "std") -> str:
    """The results table; the best mean per column is bold. A note explains the cells."""
    if spread not in SPREADS:
        raise InputError(f"spread must be one of {SPREADS}, got {spread!r}")
    # Captions left out (video failed to decode): shown only when some run left any out, since
    # R@K over fewer queries is not comparable with the full split's numbers.
    dropped = [max(int(run.get("dropped_captions", 0) or 0) for run in r.runs) for r in results]
    extra = ["dropped"] if any(dropped) else []
    header = ["model", "role", "seeds", *extra] + [title for _k, title, _d, _u in COLUMNS]
    lines = ["| " + " | ".join(header) + " |",
             "|" + "|".join(["---"] * 3 + ["---:"] * (len(COLUMNS) + len(extra))) + "|"]
    means = {key: [float(np.nanmean(r.values(key))) if not np.isnan(r.values(key)).all()
                   else math.nan for r in results] for key, _t, _d, _u in COLUMNS}
    best: dict[str, float] = {}
    for key, _title, _dec, higher in COLUMNS:
        finite = [m for m in means[key] if not math.isnan(m)]
        if finite:
            best[key] = max(finite) if higher else min(finite)
    for i, result in enumerate(results):
        cells = [result.name, result.role, str(len(result.runs))]
        cells += [str(dropped[i])] if extra else []
        for key, _title, decimals, _up in COLUMNS:
            text = _cell(result.values(key), decimals, spread)
            if len(results) > 1 and key in best and means[key][i] == best[key]:
                text = f"**{text}**"
            cells.append(text)
        lines.append("| " + " | ".join(cells) + " |")
    seeds = any(len(r.runs) > 1 for r in results)
    note = ("R@K in percent (text→video unless marked v2t); MdR/MnR = median/mean rank "
            "(lower is better); best mean in bold.")
    if seeds:
        note += (" Several seeds: mean ± sample standard deviation (ddof 1)." if spread == "std"
                 else " Several seeds: mean (min–max).")
    if extra:
        note += (" dropped = captions left out because their video failed to decode: those "
                 "rows are measured on fewer queries than the split has.")
    splits = sorted({str(run.get("split", "?")) for r in results for run in r.runs})
    note += f" Split: {', '.join(splits)}."
    return "\n".join(lines) + "\n\n" + note + "\n"


def write_plot_table(path: str | Path, results: Sequence[ModelResult]) -> Path:
    """A TSV/CSV with one row per model (means and spreads) for ``dvc plots show``."""
    from pipeline.atomic import write_text_atomic

    path = Path(path)
    sep = "," if path.suffix.lower() == ".csv" else "\t"
    rows = [{"model": r.name, "role": r.role, "seeds": len(r.runs), **summarise(r)}
            for r in results]
    keys = list(rows[0])
    text = sep.join(keys) + "\n" + "".join(
        sep.join(_fmt(row[k]) for k in keys) + "\n" for row in rows)
    write_text_atomic(path, text)
    return path


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return "nan" if math.isnan(value) else f"{value:.4f}"
    return str(value)
