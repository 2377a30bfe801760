"""``teachclip report --paired`` / ``--paired-default``: per-seed differences from a reference.

What would break: runs paired by position instead of by their provenance seed (the per-seed
differences and their spread would change, the mean would not), a model seed without a reference
run passing silently, teachers or baselines paired by ``--paired-default``, ``--paired`` not
overriding it, the TSV losing or shifting columns, the params file's ``report:`` section not
reaching the options.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from pipeline.eval.metrics_file import write_metrics_files
from pipeline.eval.report import (
    load_results,
    markdown_table,
    paired_differences,
    resolve_pairs,
)
from stages.cli import main

# seed -> (R@1, v2t R@1); each model's files are written in the order of its dict.
KD = {3: (42.0, 41.0), 1: (40.5, 43.0), 2: (41.0, 40.2)}
KD2 = {2: (39.0, 38.0), 1: (41.0, 40.0)}
BASELINE = {2: (41.5, 40.0), 4: (30.0, 30.0), 1: (39.0, 41.5), 3: (40.0, 40.6)}
BASELINE_B = {1: (40.0, 39.0), 2: (40.0, 39.0)}
TEACHER = {1: (45.0, 44.0), 2: (46.0, 45.0)}


Runs = dict[int, tuple[float, float]] | list[tuple[int | None, tuple[float, float]]]


def _write(root: Path, name: str, role: str, runs: Runs) -> str:
    """One model's metrics + provenance files (as `teachclip evaluate` writes them) → spec."""
    paths = []
    items = list(runs.items()) if isinstance(runs, dict) else runs
    for i, (seed, (r1, v2t)) in enumerate(items):
        path = root / f"{name}{i}.json"
        record = {"model": name, "role": role, "kind": "student", "split": "test",
                  "R1": r1, "R5": r1 + 20, "R10": r1 + 30, "MedianR": 3.0, "MeanR": 10.0,
                  "v2t_R1": v2t, "seed": seed}
        write_metrics_files(path, record)
        paths.append(str(path))
    return f"{name}={','.join(paths)}"


@pytest.fixture
def specs(tmp_path: Path) -> dict[str, str]:
    return {"teacher_xclip": _write(tmp_path, "teacher_xclip", "teacher", TEACHER),
            "clip4clip": _write(tmp_path, "clip4clip", "baseline", BASELINE),
            "clip4clip_b": _write(tmp_path, "clip4clip_b", "baseline", BASELINE_B),
            "kd": _write(tmp_path, "kd", "student", KD),
            "kd2": _write(tmp_path, "kd2", "student", KD2)}


def _report(tmp_path: Path, specs: dict[str, str], *args: str, params: Path | None = None):
    metrics = [a for spec in specs.values() for a in ("--metrics", spec)]
    head = ["--params", str(params)] if params else []
    return CliRunner().invoke(main, [*head, "report", *metrics, "--out",
                                     str(tmp_path / "results.md"), *args])


def _rows(output: str) -> dict[str, list[str]]:
    """Table cells by model name (header row under the key "model")."""
    rows = [line for line in output.splitlines() if line.startswith("| ")]
    cells = [[c.strip() for c in row.strip("|").split("|")] for row in rows]
    return {c[0]: c for c in cells}


def _expected_cell(model: dict, reference: dict, which: int) -> str:
    """The paired cell computed by hand from the seed → value tables above."""
    diffs = [model[seed][which] - reference[seed][which] for seed in sorted(model)]
    wins = sum(d > 0 for d in diffs)
    each = ", ".join(f"{d:+.1f}" for d in diffs)
    return (f"{np.mean(diffs):+.1f} ± {np.std(diffs, ddof=1):.1f} "
            f"({each}; {wins}/{len(diffs)} better)")


def test_paired_difference_is_computed_seed_by_seed(tmp_path: Path,
                                                    specs: dict[str, str]) -> None:
    result = _report(tmp_path, specs, "--paired", "kd=clip4clip")
    assert result.exit_code == 0, result.output
    rows = _rows(result.output)
    header = rows["model"]
    assert header[-3:] == ["vs", "ΔR@1", "Δv2t R@1"]
    kd = dict(zip(header, rows["kd"], strict=True))
    assert kd["vs"] == "clip4clip"
    # seed 1: 40.5-39.0, seed 2: 41.0-41.5, seed 3: 42.0-40.0 (seed 4 of the baseline unused)
    assert kd["ΔR@1"] == "+1.0 ± 1.3 (+1.5, -0.5, +2.0; 2/3 better)"
    assert kd["ΔR@1"] == _expected_cell(KD, BASELINE, 0)
    assert kd["Δv2t R@1"] == _expected_cell(KD, BASELINE, 1)
    # by position (files in the order given) the differences would be +3.0, -1.0, +1.0
    assert "+3.0" not in kd["ΔR@1"]
    for other in ("teacher_xclip", "clip4clip", "clip4clip_b", "kd2"):
        assert rows[other][-3:] == ["–", "–", "–"], other
    table = (tmp_path / "results.md").read_text()
    assert "computed seed by seed" in table and "– = not paired" in table
    assert "in the order given" not in table  # every run recorded its seed


def test_missing_reference_seed_is_an_error(tmp_path: Path, specs: dict[str, str]) -> None:
    specs["kd"] = _write(tmp_path, "kd", "student", {**KD, 5: (44.0, 44.0)})
    result = _report(tmp_path, specs, "--paired", "kd=clip4clip")
    assert result.exit_code == 1
    error = [line for line in result.output.splitlines() if line.startswith("Error:")]
    assert len(error) == 1, result.output
    assert "'kd'" in error[0] and "'clip4clip'" in error[0] and "seed(s) [5]" in error[0]
    assert not (tmp_path / "results.md").exists()  # fails before anything is written


def test_paired_default_pairs_students_only_and_paired_overrides(
        tmp_path: Path, specs: dict[str, str]) -> None:
    result = _report(tmp_path, specs, "--paired-default", "clip4clip",
                     "--paired", "kd2=clip4clip_b")
    assert result.exit_code == 0, result.output
    rows = _rows(result.output)
    vs = {name: cells[-3] for name, cells in rows.items() if name != "model"}
    assert vs == {"teacher_xclip": "–", "clip4clip": "–", "clip4clip_b": "–",
                  "kd": "clip4clip", "kd2": "clip4clip_b"}
    assert rows["kd"][-2] == _expected_cell(KD, BASELINE, 0)
    assert rows["kd2"][-2] == _expected_cell(KD2, BASELINE_B, 0)  # not vs clip4clip
    assert rows["kd2"][-2] != _expected_cell(KD2, BASELINE, 0)


@pytest.mark.parametrize("args, named", [
    (["--paired", "nosuch=clip4clip"], "'nosuch'"),
    (["--paired", "kd=nosuch"], "'nosuch'"),
    (["--paired-default", "nosuch"], "'nosuch'"),
])
def test_unknown_model_in_pairing_lists_known_names(tmp_path: Path, specs: dict[str, str],
                                                    args: list[str], named: str) -> None:
    result = _report(tmp_path, specs, *args)
    assert result.exit_code == 1
    error = next(line for line in result.output.splitlines() if line.startswith("Error:"))
    assert named in error
    assert "known: teacher_xclip, clip4clip, clip4clip_b, kd, kd2" in error


@pytest.mark.parametrize("args, says", [
    (["--paired", "kd"], "MODEL=REFERENCE"),
    (["--paired", "kd=kd"], "itself"),
    (["--paired", "kd=clip4clip", "--paired", "kd=clip4clip_b"], "twice"),
])
def test_malformed_pairing_is_an_error(tmp_path: Path, specs: dict[str, str],
                                       args: list[str], says: str) -> None:
    result = _report(tmp_path, specs, *args)
    assert result.exit_code == 1 and "Error:" in result.output and says in result.output


def test_tsv_has_paired_columns_after_the_unchanged_ones(tmp_path: Path,
                                                         specs: dict[str, str]) -> None:
    plain, paired = tmp_path / "plain.tsv", tmp_path / "paired.tsv"
    assert _report(tmp_path, specs, "--plot", str(plain)).exit_code == 0
    result = _report(tmp_path, specs, "--plot", str(paired), "--paired-default", "clip4clip")
    assert result.exit_code == 0, result.output
    plain_rows = [line.split("\t") for line in plain.read_text().splitlines()]
    rows = [line.split("\t") for line in paired.read_text().splitlines()]
    header = rows[0]
    assert header[:len(plain_rows[0])] == plain_rows[0]  # existing columns unchanged
    assert [row[:len(plain_rows[0])] for row in rows] == plain_rows
    assert {"paired_with", "dR1_mean", "dR1_std", "dR1_n", "dR1_wins", "dv2t_R1_mean",
            "dv2t_R1_std", "dv2t_R1_n"} <= set(header)
    by_model = {row[0]: dict(zip(header, row, strict=True)) for row in rows[1:]}
    kd = by_model["kd"]
    diffs = [KD[s][0] - BASELINE[s][0] for s in sorted(KD)]
    assert kd["paired_with"] == "clip4clip"
    assert float(kd["dR1_mean"]) == pytest.approx(np.mean(diffs), abs=1e-4)
    assert float(kd["dR1_std"]) == pytest.approx(np.std(diffs, ddof=1), abs=1e-4)
    assert kd["dR1_n"] == "3" and kd["dR1_wins"] == "2"
    v2t = [KD[s][1] - BASELINE[s][1] for s in sorted(KD)]
    assert float(kd["dv2t_R1_mean"]) == pytest.approx(np.mean(v2t), abs=1e-4)
    assert by_model["kd2"]["dR1_n"] == "2"
    teacher = by_model["teacher_xclip"]
    assert teacher["paired_with"] == "" and teacher["dR1_mean"] == "nan"
    assert teacher["dR1_n"] == "0"


def test_runs_without_seeds_pair_by_position_and_the_note_says_so(tmp_path: Path) -> None:
    # e.g. metrics files from before seeds were recorded, or imported releases
    student = _write(tmp_path, "kd", "student", [(None, (42.0, 40.0)), (None, (40.0, 41.0))])
    baseline = _write(tmp_path, "base", "baseline", [(None, (40.5, 41.0)),
                                                     (None, (41.0, 40.0))])
    results = load_results([student, baseline])
    diffs = paired_differences(results, resolve_pairs(results, (), "base"))
    assert diffs["kd"].seeds is None
    table = markdown_table(results, paired=diffs)
    kd = _rows(table)["kd"]
    assert kd[-2:] == ["+0.2 ± 1.8 (+1.5, -1.0; 1/2 better)",
                       "+0.0 ± 1.4 (-1.0, +1.0; 1/2 better)"]
    assert "kd: no training seed in the provenance, so paired" in table
    assert "in the order given" in table
    # by position needs as many runs of each (one run recording no seed is enough to fall back)
    two = _write(tmp_path, "kd2x", "student", [(None, (1.0, 1.0)), (7, (2.0, 2.0)),
                                               (8, (2.0, 2.0))])
    result = CliRunner().invoke(main, ["report", "--metrics", two, "--metrics", baseline,
                                       "--paired", "kd2x=base", "--out",
                                       str(tmp_path / "r.md")])
    assert result.exit_code == 1
    assert "'kd2x' (3 runs)" in result.output and "'base' (2 runs)" in result.output
    # only --paired-default pairs it: shown unpaired, with the reason
    result = CliRunner().invoke(main, ["report", "--metrics", two, "--metrics", baseline,
                                       "--paired-default", "base", "--out",
                                       str(tmp_path / "r.md")])
    assert result.exit_code == 0, result.output
    assert "'kd2x' (3 runs)" in result.stderr and "kd2x is shown unpaired" in result.stderr
    assert "Not paired (--paired-default): kd2x:" in (tmp_path / "r.md").read_text()


def test_seed_that_is_not_an_integer_is_an_error(tmp_path: Path) -> None:
    student = _write(tmp_path, "kd", "student", {1: (42.0, 40.0)})
    baseline = _write(tmp_path, "base", "baseline", {1: (40.5, 41.0)})
    prov = tmp_path / "base0.provenance.json"
    prov.write_text(json.dumps({**json.loads(prov.read_text()), "seed": "1"}))
    result = CliRunner().invoke(main, ["report", "--metrics", student, "--metrics", baseline,
                                       "--paired-default", "base", "--out",
                                       str(tmp_path / "r.md")])
    assert result.exit_code == 1
    assert "Error:" in result.output and "not an integer" in result.output
    assert "base0.provenance.json" in result.output


def test_pairing_from_the_params_file(tmp_path: Path, specs: dict[str, str]) -> None:
    params = tmp_path / "params.yaml"
    params.write_text("report:\n  paired_default: clip4clip\n  paired:\n"
                      "    - kd2=clip4clip_b\n", encoding="utf-8")
    result = _report(tmp_path, specs, params=params)
    assert result.exit_code == 0, result.output
    rows = _rows(result.output)
    assert rows["kd"][-3] == "clip4clip" and rows["kd2"][-3] == "clip4clip_b"
    assert rows["clip4clip"][-3] == "–"
    # the command line still wins over the params file
    result = _report(tmp_path, specs, "--paired", "kd2=clip4clip", params=params)
    assert result.exit_code == 0, result.output
    assert _rows(result.output)["kd2"][-3] == "clip4clip"
    # a mistyped key is refused before anything runs, naming the right one
    params.write_text("report:\n  paired_defualt: clip4clip\n", encoding="utf-8")
    result = _report(tmp_path, specs, params=params)
    assert result.exit_code == 1
    assert "report.paired_defualt" in result.output and "'paired_default'" in result.output


def test_paired_default_leaves_an_unpairable_student_unpaired(tmp_path: Path,
                                                              specs: dict[str, str]) -> None:
    # a lab adds a student trained with a seed the reference never ran: the report must not
    # fail (dvc's report stage would), the student is shown unpaired and the note says why
    specs["kd_seed7"] = _write(tmp_path, "kd_seed7", "student", {7: (43.0, 42.0)})
    result = CliRunner().invoke(main, ["report", *[a for s in specs.values()
                                                   for a in ("--metrics", s)],
                                       "--out", str(tmp_path / "results.md"),
                                       "--paired-default", "clip4clip"])
    assert result.exit_code == 0, result.output
    rows = _rows(result.output)
    assert rows["kd_seed7"][-3:] == ["–", "–", "–"]
    assert rows["kd"][-2] == _expected_cell(KD, BASELINE, 0)  # the others are still paired
    assert "Warning:" in result.stderr and "seed(s) [7]" in result.stderr
    table = (tmp_path / "results.md").read_text()
    assert "Not paired (--paired-default): kd_seed7:" in table and "seed(s) [7]" in table
    # asked for by name, the same pair is still an error
    named = _report(tmp_path, specs, "--paired", "kd_seed7=clip4clip")
    assert named.exit_code == 1 and "seed(s) [7]" in named.output
