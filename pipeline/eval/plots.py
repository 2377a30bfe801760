"""Pictures of results: R@K bars per model with seed error bars, and training curves.

Why pictures next to the markdown table: a table of ten models × six columns hides the one thing
a reader wants (are the students above the baseline, by more than the seed spread?), and
``dvc plots show`` writes HTML that fetches its charting library from the internet, so it is
blank on an offline cluster. These PNGs are drawn with matplotlib (an optional extra:
``pip install 'teachclip[plots]'``), imported only when a picture is asked for.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.atomic import atomic_output
from pipeline.errors import InputError
from pipeline.eval.report import ModelResult, summarise

#: Colour of each role (teacher → baseline → student, the table's order).
ROLE_COLOURS = {"teacher": "#7f7f7f", "baseline": "#1f77b4", "student": "#d62728"}
RECALLS = (("R1", "R@1"), ("R5", "R@5"), ("R10", "R@10"))
TRAIN_LOG, VAL_LOG = "train_log.tsv", "val_log.tsv"


def pyplot() -> Any:
    """matplotlib.pyplot on the file-only Agg backend; a clear InputError when not installed."""
    try:
        import matplotlib

        matplotlib.use("Agg", force=True)
        import matplotlib.pyplot as plt
    except ImportError as exc:
        raise InputError("drawing a picture needs matplotlib, which is not installed: "
                         "pip install 'teachclip[plots]' (or pip install 'matplotlib>=3.7')"
                         ) from exc
    return plt


def require_png(path: str | Path, option: str) -> Path:
    """Pictures are PNG files: refuse another suffix before any work is done."""
    path = Path(path)
    if path.suffix.lower() != ".png":
        raise InputError(f"{option} writes a PNG picture: give a path ending in .png, "
                         f"got {str(path)!r}")
    return path


def save_png(fig: Any, path: str | Path, dpi: int = 100) -> Path:
    """Write ``fig`` to ``path`` atomically (nothing half-drawn under the real name), close it."""
    plt = pyplot()
    try:
        with atomic_output(path) as tmp:
            fig.savefig(tmp, format="png", dpi=dpi)
    finally:
        plt.close(fig)
    return Path(path)


# ------------------------------------------------------------------------------ results
def results_chart(results: Sequence[ModelResult], path: str | Path) -> Path:
    """R@1, R@5 and R@10 of every model as horizontal bars (one panel each), coloured by role.

    Models keep the table's order (teachers, baselines, students) with a gap between roles;
    error bars are the sample standard deviation over seeds (none for a single seed), and
    each bar is labelled with its mean.
    """
    plt = pyplot()
    if not results:
        raise InputError("no models to draw")
    stats = [summarise(r) for r in results]
    ys, y, previous = [], 0.0, None
    for result in results:
        if previous is not None and result.role != previous:
            y += 0.6  # gap between role groups
        ys.append(y)
        y += 1.0
        previous = result.role
    height = max(2.5, 0.38 * (ys[-1] + 1) + 1.2)
    fig, axes = plt.subplots(1, len(RECALLS), figsize=(11, height), sharey=True)
    colours = [ROLE_COLOURS.get(r.role, "#2ca02c") for r in results]
    for ax, (key, title) in zip(axes, RECALLS, strict=True):
        means = np.array([s[key] for s in stats])
        errs = np.array([s[f"{key}_std"] for s in stats])
        ax.barh(ys, np.nan_to_num(means), xerr=errs, color=colours, capsize=3,
                error_kw={"elinewidth": 1})
        for yi, mean, err in zip(ys, means, errs, strict=True):
            if not math.isnan(mean):
                ax.text(mean + err + 1, yi, f"{mean:.1f}", va="center", fontsize=8)
        ax.set_title(f"{title} (%)")
        ax.set_xlim(0, 118)
        ax.grid(axis="x", alpha=0.3)
    axes[0].set_yticks(ys, [f"{r.name} ({len(r.runs)})" if len(r.runs) > 1 else r.name
                            for r in results], fontsize=8)
    axes[0].invert_yaxis()
    present = [role for role in ROLE_COLOURS if any(r.role == role for r in results)]
    handles = [plt.Rectangle((0, 0), 1, 1, color=ROLE_COLOURS[role]) for role in present]
    fig.legend(handles, present, loc="lower center", ncol=len(present), frameon=False)
    splits = sorted({str(run.get("split", "?")) for r in results for run in r.runs})
    seeds = any(len(r.runs) > 1 for r in results)
    fig.suptitle(f"text→video retrieval, split {', '.join(splits)}"
                 + ("; bars: mean, whiskers: ± std over seeds (n)" if seeds else ""),
                 fontsize=10)
    fig.tight_layout(rect=(0, 0.06, 1, 1))
    return save_png(fig, path)


# ------------------------------------------------------------------------------ curves
@dataclass
class CurveRun:
    """One model's training logs, one entry per seed (``val``/``train``: column → values)."""

    name: str
    role: str
    val: list[dict[str, np.ndarray]]
    train: list[dict[str, np.ndarray]]


def read_log(path: str | Path) -> dict[str, np.ndarray]:
    """A training log TSV as numeric columns (non-numeric cells become NaN)."""
    path = Path(path)
    try:
        with open(path, encoding="utf-8", newline="") as handle:
            rows = list(csv.DictReader(handle, delimiter="\t"))
    except OSError as exc:
        raise InputError(f"cannot read training log: {exc}", file=path) from exc
    if not rows:
        return {}
    out: dict[str, np.ndarray] = {}
    for key in rows[0]:
        values = []
        for row in rows:
            try:
                values.append(float(row.get(key) or "nan"))
            except ValueError:
                values.append(math.nan)
        out[key] = np.array(values, dtype=np.float64)
    return out


def log_dir_of(run: Mapping[str, Any]) -> Path | None:
    """The directory holding a run's logs: the folder of the ``model_path`` in its provenance."""
    model_path = run.get("model_path")
    return Path(str(model_path)).parent if model_path else None


def collect_curves(results: Sequence[ModelResult],
                   log_dirs: Mapping[str, Sequence[Path]] | None = None
                   ) -> tuple[list[CurveRun], list[str]]:
    """Each model's logs (from ``log_dirs[name]`` if given, else its provenance), and the names
    of the models that have none (e.g. imported teachers)."""
    runs: list[CurveRun] = []
    missing: list[str] = []
    for result in results:
        dirs = list((log_dirs or {}).get(result.name) or [])
        if not dirs:
            dirs = [d for d in (log_dir_of(run) for run in result.runs) if d is not None]
        val = [read_log(d / VAL_LOG) for d in dirs if (d / VAL_LOG).is_file()]
        train = [read_log(d / TRAIN_LOG) for d in dirs if (d / TRAIN_LOG).is_file()]
        val, train = [v for v in val if "epoch" in v], [t for t in train if "step" in t]
        if val or train:
            runs.append(CurveRun(result.name, result.role, val, train))
        else:
            missing.append(result.name)
    return runs, missing


def _mean_band(logs: Sequence[dict[str, np.ndarray]], x_key: str, y_key: str
               ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray] | None:
    """x, mean, min, max of ``y_key`` over seeds at every x some seed logged.

    Seeds that stopped early (``--patience``) end at different epochs: each x is summarised over
    the seeds that reached it, never extrapolated past a run's end.
    """
    logs = [log for log in logs if x_key in log and y_key in log and len(log[x_key])]
    if not logs:
        return None
    x = np.array(sorted(set().union(*(set(log[x_key].tolist()) for log in logs))))
    ys = np.full((len(logs), len(x)), np.nan)
    for i, log in enumerate(logs):
        ys[i, np.searchsorted(x, log[x_key])] = log[y_key]
    return x, np.nanmean(ys, 0), np.nanmin(ys, 0), np.nanmax(ys, 0)


def curves_chart(runs: Sequence[CurveRun], path: str | Path, metric: str = "R1",
                 loss: str = "total") -> Path:
    """Validation ``metric`` by epoch and training ``loss`` by step, one line per model.

    Line style by role (teacher dashed, baseline dotted, student solid); several seeds draw
    their mean with a min–max band.
    """
    plt = pyplot()
    if not runs:
        raise InputError("no training logs to draw (val_log.tsv / train_log.tsv)")
    styles = {"teacher": "--", "baseline": ":", "student": "-"}
    cmap = plt.get_cmap("tab10" if len(runs) <= 10 else "tab20")
    fig, (ax_val, ax_loss) = plt.subplots(1, 2, figsize=(11, 4.2))
    for i, run in enumerate(runs):
        colour, style = cmap(i % cmap.N), styles.get(run.role, "-")
        for ax, logs, x_key, y_key in ((ax_val, run.val, "epoch", metric),
                                       (ax_loss, run.train, "step", loss)):
            band = _mean_band(logs, x_key, y_key)
            if band is None:
                continue
            x, mean, low, high = band
            ax.plot(x, mean, style, color=colour, label=run.name, linewidth=1.5)
            if len(logs) > 1:
                ax.fill_between(x, low, high, color=colour, alpha=0.15, linewidth=0)
    ax_val.set(xlabel="epoch", ylabel=f"validation {metric}", title=f"validation {metric}")
    ax_loss.set(xlabel="step", ylabel=f"training loss ({loss})", title="training loss")
    for ax in (ax_val, ax_loss):
        ax.grid(alpha=0.3)
    legend: dict[str, Any] = {}
    for ax in (ax_val, ax_loss):
        for handle, label in zip(*ax.get_legend_handles_labels(), strict=True):
            legend.setdefault(label, handle)
    fig.legend(list(legend.values()), list(legend), loc="center right", fontsize=8,
               frameon=False)
    fig.tight_layout(rect=(0, 0, 0.8, 1))
    return save_png(fig, path)
