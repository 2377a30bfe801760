"""``teachclip report``: the results table, and the pictures people look at instead of reading it.

``--plot`` writes the per-model summary as a .tsv/.csv (for ``dvc plots``) or draws R@1/R@5/R@10
bars with seed error bars as a .png; ``--curves`` draws every model's validation R@1 and
training loss from the ``val_log.tsv``/``train_log.tsv`` beside its checkpoint (found through the
metrics' provenance file, or given with ``--logs``).

``--paired MODEL=REFERENCE`` / ``--paired-default REFERENCE`` add each paired row's difference
from its reference computed seed by seed (runs matched by the training seed in their provenance
files): seed noise is as large as the distillation effects, so the student-vs-baseline question
is answered by paired differences, not by two overlapping mean ± std cells. In a params file
they are ``report: {paired: [MODEL=REFERENCE, ...], paired_default: REFERENCE}``.
"""

from __future__ import annotations

from pathlib import Path

import click

from pipeline.atomic import write_text_atomic
from pipeline.errors import InputError
from pipeline.eval.plots import CurveRun, collect_curves, curves_chart, pyplot, results_chart
from pipeline.eval.report import (
    SPREADS,
    ModelResult,
    load_results,
    markdown_table,
    paired_differences,
    parse_spec,
    plateau_cell,
    resolve_pairs,
    write_plot_table,
)
from stages.groups import main
from stages.params import report_specs, root_params

PLOT_SUFFIXES = (".tsv", ".csv", ".png")


def _check_outputs(plots: tuple[str, ...], curves: str | None) -> None:
    """Refuse an unknown picture type before any file is read or written."""
    for plot in plots:
        if Path(plot).suffix.lower() not in PLOT_SUFFIXES:
            raise InputError(f"--plot must end in .tsv, .csv or .png, got {plot!r}")
    if curves is not None and Path(curves).suffix.lower() != ".png":
        raise InputError(f"--curves writes a PNG picture: give a path ending in .png, "
                         f"got {curves!r}")


@main.command("report")
@click.option("--metrics", "specs", multiple=True,
              help="NAME=metrics.json, or NAME=a.json,b.json,... for several seeds (repeat) "
                   "[default: every teacher, baseline and student of the params file].")
@click.option("--out", required=True, type=click.Path(dir_okay=False), help="results.md path.")
@click.option("--plot", "plots", multiple=True, type=click.Path(dir_okay=False),
              help="Also write a .tsv/.csv (one row per model, for `dvc plots`) or a .png bar "
                   "chart of R@1/R@5/R@10 with seed error bars (needs matplotlib); repeatable.")
@click.option("--curves", default=None, type=click.Path(dir_okay=False),
              help="Also draw training curves (validation R@1 by epoch, training loss by step) "
                   "of every model into this .png (needs matplotlib).")
@click.option("--logs", "log_specs", multiple=True,
              help="NAME=DIR[,DIR...]: training-log folders of model NAME for --curves (one per "
                   "seed; default: the folder of the model recorded in its provenance file).")
@click.option("--spread", type=click.Choice(SPREADS), default="std", show_default=True,
              help="How several seeds are summarised: sample std or min–max.")
@click.option("--paired", "paired", multiple=True, metavar="MODEL=REFERENCE",
              help="Also show MODEL minus REFERENCE computed seed by seed (runs paired by the "
                   "training seed in their provenance files): mean ± std, each seed's "
                   "difference and the seeds MODEL wins; repeatable; overrides "
                   "--paired-default for MODEL.")
@click.option("--paired-default", default=None, metavar="REFERENCE",
              help="Pair every student row (role student, e.g. each distilled student) with "
                   "REFERENCE (e.g. the no-teacher baseline) unless --paired names it.")
@click.pass_context
def report(ctx: click.Context, specs: tuple[str, ...], out: str, plots: tuple[str, ...],
           curves: str | None, log_specs: tuple[str, ...], spread: str,
           paired: tuple[str, ...], paired_default: str | None) -> None:
    """Write (and print) the results table; best value per column in bold.

    Everything that can fail (bad metrics, no matplotlib, no training logs) fails before the
    first file is written.
    """
    _check_outputs(plots, curves)
    specs = specs or tuple(report_specs(root_params(ctx)))
    if not specs:
        raise click.UsageError("give --metrics NAME=FILE (or a params file defining models)")
    results = load_results(specs)
    pairs = resolve_pairs(results, paired, paired_default)
    skipped: dict[str, str] = {}
    diffs = paired_differences(results, pairs,
                               optional=set(pairs) - set(resolve_pairs(results, paired)),
                               skipped=skipped)
    pngs = [p for p in plots if Path(p).suffix.lower() == ".png"]
    if pngs or curves is not None:
        pyplot()
    runs = _curve_runs(results, curves, log_specs) if curves is not None else []
    table = markdown_table(results, spread=spread, paired=diffs)
    if skipped:
        table += ("\nNot paired (--paired-default): "
                  + "; ".join(f"{name}: {why}" for name, why in sorted(skipped.items())) + "\n")
        for name, why in sorted(skipped.items()):
            click.echo(f"Warning: {why}; {name} is shown unpaired", err=True)
    for result in results:
        cell, flagged = plateau_cell(result)
        if flagged:
            click.echo(f"Warning: {result.name}: best epoch among the last few of a run ({cell}):"
                       " probably still improving when training stopped (marked † in the "
                       "table)", err=True)
    write_text_atomic(out, "# Results\n\n" + table)
    click.echo(table, nl=False)
    for plot in plots:
        if plot in pngs:
            results_chart(results, plot)
        else:
            write_plot_table(plot, results, paired=diffs)
    if curves is not None:
        curves_chart(runs, curves)
    click.echo(f"wrote {', '.join([out, *plots] + ([curves] if curves else []))}")


def _curve_runs(results: list[ModelResult], curves: str, log_specs: tuple[str, ...]
                ) -> list[CurveRun]:
    """Every model's training logs; says which models have none (e.g. imported teachers)."""
    names = {r.name for r in results}
    log_dirs: dict[str, list[Path]] = {}
    for spec in log_specs:
        name, dirs = parse_spec(spec)
        if name not in names:
            raise InputError(f"--logs names model {name!r}, which no --metrics gives "
                             f"(known: {sorted(names)})")
        log_dirs[name] = dirs
    runs, missing = collect_curves(results, log_dirs)
    if not runs:
        raise InputError(f"--curves {curves}: none of the models has training logs "
                         "(val_log.tsv / train_log.tsv beside its model.pt); give their "
                         "folders with --logs NAME=DIR")
    if missing:
        click.echo(f"no training logs for {', '.join(missing)} (not drawn in {curves}; "
                   "give their folders with --logs NAME=DIR)", err=True)
    return runs
