"""`teachclip --params FILE CMD`: option defaults come from the section named after the command."""

from __future__ import annotations

from pathlib import Path

import click
from click.testing import CliRunner

from stages.groups import defaults_for, load_params


@click.group()
def root() -> None:
    """A stand-in command tree."""


@root.group()
def sub() -> None:
    """A sub-group."""


@sub.command("run")
@click.option("--out", "out_dir", required=True)
@click.option("--batch-size", type=int, default=1)
def run(out_dir: str, batch_size: int) -> None:
    click.echo(f"{out_dir} {batch_size}")


def test_defaults_translate_option_names_to_parameter_names() -> None:
    params = {"sub": {"run": {"out": "x", "batch_size": 3}}, "other": {"k": 1}}
    mapped = defaults_for(root, params)
    assert mapped["sub"]["run"]["out_dir"] == "x"
    assert mapped["sub"]["run"]["batch_size"] == 3
    assert mapped["other"] == {"k": 1}
    result = CliRunner().invoke(root, ["sub", "run"], default_map=mapped)
    assert result.exit_code == 0, result.output
    assert result.output.strip() == "x 3"
    result = CliRunner().invoke(root, ["sub", "run", "--batch-size", "7"], default_map=mapped)
    assert result.output.strip() == "x 7"  # the command line wins


def test_load_params_turns_dashes_into_underscores(tmp_path: Path) -> None:
    path = tmp_path / "p.yaml"
    path.write_text("frames:\n  max-frames: 12\n", encoding="utf-8")
    assert load_params(path) == {"frames": {"max_frames": 12}}


def test_real_cli_reads_required_option_from_params(tmp_path: Path) -> None:
    from stages.cli import main

    params = tmp_path / "params.yaml"
    out = tmp_path / "synth"
    params.write_text(
        f"data:\n  synth:\n    out: {out}\n    n_train: 2\n    n_val: 1\n    n_test: 1\n"
        "    min_duration: 3\n    max_duration: 3\n    max_segments: 1\n", encoding="utf-8")
    result = CliRunner().invoke(main, ["--params", str(params), "data", "synth"])
    assert result.exit_code == 0, result.output
    assert (out / "videos.csv").read_text().count("\n") == 1 + 4
