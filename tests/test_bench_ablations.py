"""bench/ablations.py: the job graph it runs, the spec checks and the rows chosen on val."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parent.parent


def _bench():
    spec = importlib.util.spec_from_file_location("bench_ablations", REPO / "bench/ablations.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["bench_ablations"] = module
    spec.loader.exec_module(module)
    return module


bench = _bench()


@pytest.mark.parametrize("name", ["ablations.yaml", "draw.yaml"])
def test_shipped_specs_load_and_every_run_is_valid_params(name: str, tmp_path: Path) -> None:
    """The shipped specs pass the checks, and the params file they make passes teachclip's own
    key validation (the same check `teachclip --params` runs before any work)."""
    from stages.cli import main  # noqa: PLC0415
    from stages.params import load_params  # noqa: PLC0415

    spec = bench.load_spec(REPO / "bench" / name)
    base = yaml.safe_load((REPO / "params.yaml").read_text())
    params = bench.merged_params(base, spec, tmp_path, data_seed=3 if name == "draw.yaml" else None)
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(params, sort_keys=False))
    load_params(path, main)  # raises InputError naming the key on any problem
    if name == "draw.yaml":
        assert params["data"]["synth"]["seed"] == 3
        assert params["paths"]["frames"] == str(tmp_path / "data" / "frames.h5")
        assert params["clip"]["prepare"]["source"] == str(tmp_path / "data/dataset/segments.csv")
    else:
        assert params["paths"]["frames"] == base["paths"]["frames"]  # the default's draw


def test_job_graph_pairs_every_student_with_its_own_seeds_teachers(tmp_path: Path) -> None:
    spec = bench.load_spec(REPO / "bench" / "ablations.yaml")
    jobs = {j.name: j for j in bench.training_jobs(tmp_path / "p.yaml", spec, [42, 1], tmp_path)}
    two = jobs["1/train/xclip_ts2net"]
    assert sorted(two.deps) == ["1/score/ts2net", "1/score/xclip"]
    caches = [two.cmd[i + 1] for i, a in enumerate(two.cmd) if a == "--cache"]
    assert caches == [str(tmp_path / "seed1/teachers/xclip/cache/cache.h5"),
                      str(tmp_path / "seed1/teachers/ts2net/cache/cache.h5")]
    assert two.cmd[two.cmd.index("--seed") + 1] == "1"
    assert jobs["42/train/baseline_seqTransf_AFA"].deps == []
    assert jobs["42/evaluate/xclip"].cmd[jobs["42/evaluate/xclip"].cmd.index("--name") + 1] \
        == "student_xclip"
    n_models = len(spec["baselines"]) + len(spec["students"])
    assert len(jobs) == 2 * (2 * len(spec["teachers"]) + 2 * n_models)


def test_bad_specs_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump({"teachers": {}, "baselines": {"b": {}},
                                    "students": {"s": {"teachers": ["nope"]}},
                                    "reference": "b"}))
    with pytest.raises(SystemExit, match="names teacher 'nope'"):
        bench.load_spec(path)
    path.write_text(yaml.safe_dump({"baselines": {"b": {}}, "reference": "b",
                                    "sweeps": {"ls": ["missing"]}}))
    with pytest.raises(SystemExit, match="sweeps.ls names 'missing'"):
        bench.load_spec(path)


def test_sweep_choice_is_the_best_mean_validation_score(tmp_path: Path) -> None:
    vals = {"a": [10.0, 14.0], "b": [13.0, 12.0], "c": [20.0, 1.0]}  # means 12, 12.5, 10.5
    for name, scores in vals.items():
        for seed, score in zip((42, 1), scores, strict=True):
            d = tmp_path / f"seed{seed}" / "students" / name
            d.mkdir(parents=True)
            (d / "summary.json").write_text(json.dumps({"best_metrics": {"R1": score}}))
    chosen, table = bench.select_on_val(tmp_path, [42, 1], {"ls": ["a", "b", "c", "d"]})
    assert chosen == {"ls": "b"}
    assert "| ls | b | 12.50 | **yes** |" in table and "| ls | d | missing |" in table


def test_a_failed_job_blocks_only_its_dependents(tmp_path: Path) -> None:
    ok = tmp_path / "ok"
    jobs = [
        bench.Job("bad", [sys.executable, "-c", "raise SystemExit(3)"], tmp_path / "never"),
        bench.Job("after_bad", [sys.executable, "-c", "pass"], tmp_path / "x", ["bad"]),
        bench.Job("then", [sys.executable, "-c", "pass"], tmp_path / "y", ["after_bad"]),
        bench.Job("ok", [sys.executable, "-c", f"open({str(ok)!r}, 'w')"], ok),
    ]
    failed = bench.run_jobs(jobs, 2, 1, tmp_path / "logs")
    assert failed == ["bad", "after_bad", "then"]
    assert ok.exists() and not (tmp_path / "x").exists()


def test_only_keeps_the_named_rows_their_teachers_and_the_reference() -> None:
    spec = bench.load_spec(REPO / "bench" / "ablations.yaml")
    small = bench.only_models(spec, ["xclip_ts2net", "twin_ls01"])
    assert set(small["students"]) == {"xclip_ts2net"}
    assert set(small["baselines"]) == {"twin_ls01", "baseline_seqTransf_AFA"}
    assert set(small["teachers"]) == {"xclip", "ts2net"}
    assert small["sweeps"] == {"label_smoothing": ["twin_ls01"]}
    assert small["control"] == "label_smoothing"
    with pytest.raises(SystemExit, match="--only nope"):
        bench.only_models(spec, ["nope"])


def test_reuse_links_only_identical_entries_of_the_default(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(bench, "REPO", tmp_path)
    base = {"paths": {"teachers": "t", "students": "s", "metrics": "m"},
            "teacher": {"train": {"seed": 42}}, "student": {"train": {"seed": 42}},
            "teachers": {"xclip": {"kind": "xclip"}},
            "baselines": {"twin": {"aggregation": "afa"}},
            "students": {"xclip": {"teachers": ["xclip"], "beta": 2.0}}}
    for path in ("t/xclip/model/model.pt", "t/xclip/cache/metrics.json", "s/twin/model.pt",
                 "m/twin.json", "m/twin.provenance.json"):
        (tmp_path / path).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / path).write_text("x")
    spec = {"teachers": {"xclip": {"kind": "xclip"}}, "baselines": {"twin": {"aggregation": "afa"}},
            "students": {"xclip": {"teachers": ["xclip"]}}}  # beta differs: not the same run
    root = tmp_path / "root"
    assert bench.reuse_default_runs(base, spec, root, [42, 1]) == ["xclip", "twin"]
    assert (root / "seed42/teachers/xclip/model/model.pt").exists()
    assert (root / "seed42/metrics/twin.json").is_symlink()
    assert not (root / "seed42/students/xclip").exists()
    assert bench.reuse_default_runs(base, spec, tmp_path / "r2", [1, 2]) == []  # no seed 42
