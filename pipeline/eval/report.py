"""Results table of every evaluated model (markdown), optionally aggregated over seeds.

Why seeds: retrieval numbers move by about a point between seeds (the top user complaint about
CLIP4Clip-family results is "cannot reproduce R@1"), so a student-vs-baseline comparison is only
meaningful with the spread next to the mean. Spread = sample standard deviation (ddof 1) or
min–max; the table says which.

Why paired differences: the method's ablations compare a distilled student with the
same-architecture student trained without a teacher, and seed noise (about one R@1 point) is as
large as the effects. Two rows' unpaired spreads overstate how uncertain their difference is when
both were trained with the same seeds, so a row can also show its difference from a reference
model computed seed by seed (runs matched by the training seed in their provenance files).
"""

from __future__ import annotations

import json
import math
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.atomic import SUMMARY_FILE
from pipeline.errors import InputError
from pipeline.eval.metrics_file import provenance_path, read_metrics_files
from pipeline.plateau import PlateauStatus, status_from_summary

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
#: Metrics whose paired difference the markdown table shows (the TSV/CSV has every column's).
PAIRED_TABLE_KEYS = ("R1", "v2t_R1")


@dataclass
class ModelResult:
    """One table row: a model name and its metrics for one or more seeds."""

    name: str
    runs: list[dict[str, Any]]
    sources: list[Path]
    #: (best-epoch cell, any run still rising), filled once by :func:`plateau_cell`.
    plateau: tuple[str, bool] | None = field(default=None, repr=False, compare=False)

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

    def seeds(self) -> list[int | None]:
        """Each run's training seed from its provenance (None: not recorded, e.g. imported).

        Raises InputError naming the provenance file when a seed is not an integer, since
        pairing runs by a mistyped seed would silently compare different runs.
        """
        out: list[int | None] = []
        for run, source in zip(self.runs, self.sources, strict=True):
            seed = run.get("seed")
            if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
                raise InputError(f"provenance 'seed' of model {self.name!r} is {seed!r}, not an "
                                 "integer", file=provenance_path(source))
            out.append(seed)
        return out


@dataclass(frozen=True)
class PairedDiff:
    """One model's per-seed differences (model − reference) in every column's metric.

    ``seeds`` are the seeds the differences belong to, in order; None when the runs record no
    training seed and were paired in the order given (the table note says so).
    """

    model: str
    reference: str
    seeds: tuple[int, ...] | None
    diffs: dict[str, np.ndarray]

    def stats(self, key: str, higher: bool) -> tuple[np.ndarray, float, float, int]:
        """(finite differences, mean, sample std (0 for one seed), seeds where model is better)."""
        diffs = self.diffs[key][~np.isnan(self.diffs[key])]
        if diffs.size == 0:
            return diffs, math.nan, math.nan, 0
        wins = int((diffs > 0).sum() if higher else (diffs < 0).sum())
        std = float(diffs.std(ddof=1)) if diffs.size > 1 else 0.0
        return diffs, float(diffs.mean()), std, wins


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


def _known_name(name: str, names: Sequence[str], where: str) -> str:
    if name not in names:
        raise InputError(f"{where} names model {name!r}, which no --metrics gives "
                         f"(known: {', '.join(names)})")
    return name


def resolve_pairs(results: Sequence[ModelResult], paired: Sequence[str] = (),
                  paired_default: str | None = None) -> dict[str, str]:
    """model → reference from ``MODEL=REFERENCE`` specs, plus every student row (role
    ``student``) paired with ``paired_default`` unless a spec names it.

    Why only students by default: the question the ablations ask is "does the teacher help this
    student?"; teachers and baselines are the references, not the rows being judged.
    """
    names = [r.name for r in results]
    pairs: dict[str, str] = {}
    for spec in paired:
        model, sep, reference = (part.strip() for part in spec.partition("="))
        if not sep or not model or not reference:
            raise InputError(f"--paired expects MODEL=REFERENCE, got {spec!r}")
        _known_name(model, names, f"--paired {spec}")
        _known_name(reference, names, f"--paired {spec}")
        if model == reference:
            raise InputError(f"--paired {spec}: a model cannot be paired with itself")
        if model in pairs:
            raise InputError(f"--paired gives model {model!r} twice "
                             f"(with {pairs[model]!r} and {reference!r})")
        pairs[model] = reference
    if paired_default:
        _known_name(paired_default, names, "--paired-default")
        for result in results:
            if (result.role == "student" and result.name != paired_default
                    and result.name not in pairs):
                pairs[result.name] = paired_default
    return pairs


class UnpairableError(InputError):
    """Two models whose runs cannot be matched seed by seed (a seed without a reference run, or
    runs without seeds in unequal numbers); damaged provenance stays a plain InputError."""


def pair_runs(model: ModelResult, reference: ModelResult) -> PairedDiff:
    """Match each run of ``model`` with the run of ``reference`` trained with the same seed.

    Every run of both recording a seed: pairs by seed (a reference may have more seeds than the
    model; a model seed without a reference run is an InputError naming both models and the
    seeds). Otherwise (imported models, old metrics files): pairs by position, which needs the
    same number of runs on both sides.
    """
    model_seeds, ref_seeds = model.seeds(), reference.seeds()
    seeds: tuple[int, ...] | None = None
    if None in model_seeds or None in ref_seeds:
        if len(model.runs) != len(reference.runs):
            raise UnpairableError(
                f"cannot pair {model.name!r} ({len(model.runs)} runs) with reference "
                f"{reference.name!r} ({len(reference.runs)} runs): not every run records its "
                "training seed in its provenance file, so runs are paired in the order given, "
                "which needs as many runs of each")
        matched = [(i, i) for i in range(len(model.runs))]
    else:
        mine = [int(s) for s in model_seeds if s is not None]
        theirs = [int(s) for s in ref_seeds if s is not None]
        for result, its in ((model, mine), (reference, theirs)):
            twice = sorted({s for s in its if its.count(s) > 1})
            if twice:
                raise InputError(f"model {result.name!r} has several runs with seed(s) "
                                 f"{twice}: cannot pair {model.name!r} with {reference.name!r} "
                                 "seed by seed")
        missing = sorted(set(mine) - set(theirs))
        if missing:
            raise UnpairableError(
                f"cannot pair {model.name!r} with reference {reference.name!r}: "
                f"{reference.name!r} has no run with seed(s) {missing} (its seeds: "
                f"{sorted(theirs)}); give its metrics for those seeds, or leave them out of "
                f"{model.name!r}")
        ref_at = {seed: j for j, seed in enumerate(theirs)}
        order = sorted(range(len(mine)), key=mine.__getitem__)
        matched = [(i, ref_at[mine[i]]) for i in order]
        seeds = tuple(mine[i] for i in order)
    diffs = {}
    for key, _title, _dec, _up in COLUMNS:
        values, ref_values = model.values(key), reference.values(key)
        diffs[key] = np.array([values[i] - ref_values[j] for i, j in matched], dtype=np.float64)
    return PairedDiff(model.name, reference.name, seeds, diffs)


def paired_differences(results: Sequence[ModelResult], pairs: dict[str, str],
                       optional: Collection[str] = (),
                       skipped: dict[str, str] | None = None) -> dict[str, PairedDiff]:
    """:func:`pair_runs` for every model → reference of ``pairs`` (names from ``results``).

    Models in ``optional`` (those only ``--paired-default`` paired) that cannot be paired, e.g.
    a student trained with a seed the reference never ran, are left unpaired and their reason
    goes into ``skipped``: one extra model must not fail a whole report. A pair the user asked
    for by name still fails.
    """
    by_name = {r.name: r for r in results}
    out: dict[str, PairedDiff] = {}
    for model, ref in pairs.items():
        try:
            out[model] = pair_runs(by_name[model], by_name[ref])
        except UnpairableError as exc:
            if model not in optional:
                raise
            if skipped is not None:
                skipped[model] = str(exc)
    return out


def _paired_cell(diff: PairedDiff, key: str, decimals: int, higher: bool) -> str:
    """``+1.2 ± 0.8 (+0.4, +2.1, +1.1; 3/3 better)``: mean ± std, each seed, wins."""
    diffs, mean, std, wins = diff.stats(key, higher)
    if diffs.size == 0:
        return "–"
    better = f"{wins}/{diffs.size} better"
    if diffs.size == 1:
        return f"{mean:+.{decimals}f} ({better})"
    each = ", ".join(f"{d:+.{decimals}f}" for d in diffs)
    return f"{mean:+.{decimals}f} ± {std:.{decimals}f} ({each}; {better})"


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


def training_status(run: dict[str, Any]) -> PlateauStatus | None:
    """The plateau status recorded in the summary.json beside a run's model (None: the run was
    imported, trained before it was recorded, or its folder is gone)."""
    model_path = run.get("model_path")
    if not model_path:
        return None
    path = Path(str(model_path)).parent / SUMMARY_FILE
    try:
        summary = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return status_from_summary(summary) if isinstance(summary, dict) else None


def plateau_cell(result: ModelResult) -> tuple[str, bool]:
    """``28/40`` per run (best epoch counted from 1 / epochs run), ``†`` marking a run whose best
    epoch is among its last few (still improving); and whether any run is so marked.

    Computed once per result (the table and the CLI's warnings both ask; each run's
    summary.json is read once)."""
    if result.plateau is None:
        result.plateau = _plateau_cell(result)
    return result.plateau


def _plateau_cell(result: ModelResult) -> tuple[str, bool]:
    parts, flagged = [], False
    for run in result.runs:
        status = training_status(run)
        if status is None:
            parts.append("–")
            continue
        mark = "" if status.reached else "†"
        flagged = flagged or not status.reached
        parts.append(f"{status.best_epoch + 1}/{status.epochs_run}{mark}")
    return ", ".join(parts), flagged


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


def markdown_table(results: Sequence[ModelResult], spread: str = "std",
                   paired: dict[str, PairedDiff] | None = None) -> str:
    """The results table; the best mean per column is bold. A note explains the cells.

    ``paired`` (from :func:`paired_differences`) adds the columns ``vs`` and ΔR@1, Δv2t R@1
    (rows not in it show –); without it the table is exactly what it was before pairing.
    """
    paired = paired or {}
    paired_cols = [c for c in COLUMNS if c[0] in PAIRED_TABLE_KEYS] if paired else []
    if spread not in SPREADS:
        raise InputError(f"spread must be one of {SPREADS}, got {spread!r}")
    # Captions left out (video failed to decode): shown only when some run left any out, since
    # R@K over fewer queries is not comparable with the full split's numbers.
    dropped = [max(int(run.get("dropped_captions", 0) or 0) for run in r.runs) for r in results]
    extra = ["dropped"] if any(dropped) else []
    epochs = [plateau_cell(r) for r in results]
    show_epochs = any(cell.strip("–, ") for cell, _flag in epochs)
    header = ["model", "role", "seeds", *extra] + [title for _k, title, _d, _u in COLUMNS]
    align = ["---"] * 3 + ["---:"] * (len(COLUMNS) + len(extra))
    if show_epochs:
        header.append("best epoch")
        align.append("---:")
    if paired_cols:
        header += ["vs"] + [f"Δ{title}" for _k, title, _d, _u in paired_cols]
        align += ["---"] + ["---:"] * len(paired_cols)
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(align) + "|"]
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
        if show_epochs:
            cells.append(epochs[i][0])
        if paired_cols:
            diff = paired.get(result.name)
            cells.append(diff.reference if diff else "–")
            cells += [_paired_cell(diff, key, decimals, higher) if diff else "–"
                      for key, _title, decimals, higher in paired_cols]
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
    if paired_cols:
        titles = ", ".join(f"Δ{title}" for _k, title, _d, _u in paired_cols)
        note += (f" {titles}: the row minus the model named in vs, computed seed by seed (runs "
                 "paired by the training seed in their provenance), because seed noise is as "
                 "large as the effects: mean ± sample standard deviation (ddof 1) of the "
                 "per-seed differences, each seed's difference in seed order, and on how many "
                 "seeds the row is better; – = not paired.")
        by_order = [r.name for r in results if r.name in paired
                    and paired[r.name].seeds is None]
        if by_order:
            note += (f" {', '.join(by_order)}: no training seed in the provenance, so paired "
                     "with the reference run by run in the order given.")
    if show_epochs:
        note += (" best epoch: the validation-selected epoch (counted from 1) / epochs trained, "
                 "per seed.")
        if any(flag for _cell, flag in epochs):
            note += (" † = the best epoch is among the run's last few: it was probably still "
                     "improving when training stopped, so its row understates the model.")
    splits = sorted({str(run.get("split", "?")) for r in results for run in r.runs})
    note += f" Split: {', '.join(splits)}."
    return "\n".join(lines) + "\n\n" + note + "\n"


def paired_summary(diff: PairedDiff | None) -> dict[str, Any]:
    """``paired_with`` and ``d<KEY>_mean/_std/_n/_wins`` of every column for the TSV/CSV
    (``paired_with`` empty, means NaN and counts 0 for a row that is not paired)."""
    out: dict[str, Any] = {"paired_with": diff.reference if diff else ""}
    for key, _title, _dec, higher in COLUMNS:
        if diff is None:
            mean, std, n, wins = math.nan, math.nan, 0, 0
        else:
            diffs, mean, std, wins = diff.stats(key, higher)
            n = int(diffs.size)
        out.update({f"d{key}_mean": mean, f"d{key}_std": std, f"d{key}_n": n,
                    f"d{key}_wins": wins})
    return out


def write_plot_table(path: str | Path, results: Sequence[ModelResult],
                     paired: dict[str, PairedDiff] | None = None) -> Path:
    """A TSV/CSV with one row per model (means and spreads) for ``dvc plots show``.

    With ``paired``, the paired-difference columns of :func:`paired_summary` follow the
    existing ones (which stay as they are, so plots defined on them keep working).
    """
    from pipeline.atomic import write_text_atomic

    path = Path(path)
    sep = "," if path.suffix.lower() == ".csv" else "\t"
    rows = [{"model": r.name, "role": r.role, "seeds": len(r.runs), **summarise(r),
             **(paired_summary(paired.get(r.name)) if paired else {})}
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
