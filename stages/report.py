"""``teachclip report``: one markdown table comparing teachers, baseline and students."""

from __future__ import annotations

from pathlib import Path

import click

from pipeline.atomic import write_text_atomic
from pipeline.errors import InputError
from pipeline.eval.report import (
    SPREADS,
    load_results,
    markdown_table,
    write_plot_png,
    write_plot_table,
)
from stages.groups import main
from stages.params import report_specs, root_params


@main.command("report")
@click.option("--metrics", "specs", multiple=True,
              help="NAME=metrics.json, or NAME=a.json,b.json,... for several seeds (repeat) "
                   "[default: every teacher, baseline and student of the params file].")
@click.option("--out", required=True, type=click.Path(dir_okay=False), help="results.md path.")
@click.option("--plot", default=None, type=click.Path(dir_okay=False),
              help="Also write a .tsv/.csv (for `dvc plots show`) or a .png (needs matplotlib).")
@click.option("--spread", type=click.Choice(SPREADS), default="std", show_default=True,
              help="How several seeds are summarised: sample std or min–max.")
@click.pass_context
def report(ctx: click.Context, specs: tuple[str, ...], out: str, plot: str | None,
           spread: str) -> None:
    """Write (and print) the results table; best value per column in bold."""
    specs = specs or tuple(report_specs(root_params(ctx)))
    if not specs:
        raise click.UsageError("give --metrics NAME=FILE (or a params file defining models)")
    results = load_results(specs)
    table = markdown_table(results, spread=spread)
    write_text_atomic(out, "# Results\n\n" + table)
    click.echo(table, nl=False)
    if plot:
        suffix = Path(plot).suffix.lower()
        if suffix in (".tsv", ".csv"):
            write_plot_table(plot, results)
        elif suffix == ".png":
            write_plot_png(plot, results)
        else:
            raise InputError(f"--plot must end in .tsv, .csv or .png, got {plot!r}")
        click.echo(f"wrote {out} and {plot}")
    else:
        click.echo(f"wrote {out}")
