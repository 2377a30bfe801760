"""The paper's ablations at the plateau over several seeds, paired, as one command.

Why a bench command and not the default pipeline: the default (`dvc repro`) trains the method,
its no-teacher twin, CLIP4Clip seqTransf and the teacher in under 15 minutes on 2 cores; the
ablations (coarse only, fine only, a relevance-temperature sweep, two teachers, cross-fitted
caches with K = 2 and 5, a label-smoothing control tuned on val) are ~40 runs per seed. This
script runs them with the pipeline's own commands (`teachclip teacher train/score`, `student
train`, `evaluate`, `report`), every run under the same plateau rule (params.yaml's ceiling and
patience), in parallel where the machine allows (`--jobs`; a GPU takes a dozen tiny runs at once).

    python bench/ablations.py                          # bench/ablations.yaml, seeds 42 1 2
    python bench/ablations.py --spec bench/draw.yaml --data-seed 1   # a second synthetic draw
    python bench/ablations.py --jobs 12 --threads 1    # on a GPU machine

Reuses the default's dataset, frames.h5 and CLIP (run `dvc repro` first), or, with
``--data-seed N``, renders draw N of the synthetic set (``data.synth.seed``), decodes it and
pre-trains its CLIP under ROOT/data first (``--stage prepare`` only renders and decodes: run it
where ffmpeg is, then train elsewhere, e.g. on a GPU machine). Finished runs are kept: rerunning
resumes. Writes ROOT/results.md (every row, paired by seed with the spec's reference),
ROOT/selection.md (the sweeps' rows chosen on validation), ROOT/control.md (the method against
the chosen control), ROOT/curves.png (validation R@1 by epoch of the method and its twin, mean
and min–max band over seeds) and ROOT/results.tsv.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parent.parent
TEACHCLIP = [sys.executable, "-m", "stages.cli"]
SPEC_KEYS = {"teachers", "baselines", "students", "sweeps", "reference", "control"}


@dataclass
class Job:
    """One pipeline command; ``done`` exists once it has finished (resume skips it)."""

    name: str
    cmd: list[str]
    done: Path
    deps: list[str] = field(default_factory=list)


def load_spec(path: Path) -> dict[str, Any]:
    """The ablation spec (teachers/baselines/students/sweeps/reference/control), checked."""
    spec = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    unknown = set(spec) - SPEC_KEYS
    if unknown:
        raise SystemExit(f"Error: {path}: unknown key(s) {sorted(unknown)}; expected "
                         f"{sorted(SPEC_KEYS)}")
    models = {**(spec.get("baselines") or {}), **(spec.get("students") or {})}
    for name, entry in (spec.get("students") or {}).items():
        for teacher in entry.get("teachers") or []:
            if teacher not in (spec.get("teachers") or {}):
                raise SystemExit(f"Error: {path}: students.{name} names teacher {teacher!r}, "
                                 "which teachers: does not define")
    for sweep, rows in (spec.get("sweeps") or {}).items():
        for row in rows:
            if row not in models:
                raise SystemExit(f"Error: {path}: sweeps.{sweep} names {row!r}, which no "
                                 "baselines:/students: entry defines")
    if spec.get("reference") not in (spec.get("baselines") or {}):
        raise SystemExit(f"Error: {path}: reference {spec.get('reference')!r} is not a baseline")
    if spec.get("control") and spec["control"] not in (spec.get("sweeps") or {}):
        raise SystemExit(f"Error: {path}: control {spec['control']!r} is not a sweep")
    return spec


def only_models(spec: Mapping[str, Any], names: Sequence[str]) -> dict[str, Any]:
    """The spec restricted to ``names`` (baselines/students), their teachers, the reference and
    the sweep rows that remain; an unknown name is an error."""
    models = {**(spec.get("baselines") or {}), **(spec.get("students") or {})}
    unknown = [n for n in names if n not in models]
    if unknown:
        raise SystemExit(f"Error: --only {','.join(unknown)}: not in the spec (known: "
                         f"{', '.join(models)})")
    keep = set(names) | {spec["reference"]}
    out = dict(spec)
    out["baselines"] = {n: e for n, e in (spec.get("baselines") or {}).items() if n in keep}
    out["students"] = {n: e for n, e in (spec.get("students") or {}).items() if n in keep}
    needed = {t for e in out["students"].values() for t in (e or {}).get("teachers") or []}
    out["teachers"] = {n: e for n, e in (spec.get("teachers") or {}).items() if n in needed}
    out["sweeps"] = {k: [r for r in rows if r in keep]
                     for k, rows in (spec.get("sweeps") or {}).items()}
    out["sweeps"] = {k: rows for k, rows in out["sweeps"].items() if rows}
    if out.get("control") not in out["sweeps"]:
        out.pop("control", None)
    return out


def merged_params(base: Mapping[str, Any], spec: Mapping[str, Any], root: Path,
                  data_seed: int | None) -> dict[str, Any]:
    """params.yaml with the spec's models; for another draw, data.synth.seed and its paths."""
    params = json.loads(json.dumps(base))  # deep copy of plain YAML data
    for table in ("teachers", "baselines", "students"):
        params[table] = dict(spec.get(table) or {})
    params.setdefault("paths", {})
    params["paths"].update({"teachers": str(root / "teachers"), "students": str(root / "students"),
                            "metrics": str(root / "metrics"), "results": str(root)})
    if data_seed is not None:
        params["data"]["synth"]["seed"] = data_seed
        params["paths"].update({"dataset": str(root / "data" / "dataset"),
                                "frames": str(root / "data" / "frames.h5"),
                                "clip": str(root / "data" / "clip")})
        prepare = params.get("clip", {}).get("prepare", {})
        if prepare.get("mode", "pretrain") == "pretrain":  # pre-train on this draw's segments
            prepare["source"] = str(root / "data" / "dataset" / "segments.csv")
    return params


def prepare_jobs(params_file: Path, params: Mapping[str, Any]) -> list[Job]:
    """Render and decode another draw (the dvc stages that need ffmpeg, by hand)."""
    paths = params["paths"]
    base = [*TEACHCLIP, "--params", str(params_file)]
    return [
        Job("dataset", [*base, "data", "prepare"], Path(paths["dataset"]) / "captions.csv"),
        Job("frames", [*base, "frames"], Path(paths["frames"]), ["dataset"]),
    ]


def clip_job(params_file: Path, params: Mapping[str, Any]) -> Job:
    """Pre-train (or convert) the CLIP of another draw: the dvc clip stage, by hand."""
    return Job("clip", [*TEACHCLIP, "--params", str(params_file), "clip", "prepare"],
               Path(params["paths"]["clip"]) / "config.json")


def training_jobs(params_file: Path, spec: Mapping[str, Any], seeds: Sequence[int],
                  root: Path) -> list[Job]:
    """Every teacher (train, score) and model (train, evaluate) for every seed, with deps."""
    base = [*TEACHCLIP, "--params", str(params_file)]
    jobs: list[Job] = []
    for seed in seeds:
        run = root / f"seed{seed}"
        for teacher in spec.get("teachers") or {}:
            home = run / "teachers" / teacher
            model, cache = home / "model", home / "cache"
            jobs.append(Job(f"{seed}/teacher/{teacher}",
                            [*base, "teacher", "train", "--name", teacher, "--seed", str(seed),
                             "--out", str(model)], model / "model.pt"))
            jobs.append(Job(f"{seed}/score/{teacher}",
                            [*base, "teacher", "score", "--name", teacher, "--model", str(model),
                             "--out", str(cache)], cache / "metrics.json",
                            [f"{seed}/teacher/{teacher}"]))
        for table in ("baselines", "students"):
            for name, entry in (spec.get(table) or {}).items():
                teachers = list((entry or {}).get("teachers") or [])
                caches = [arg for t in teachers
                          for arg in ("--cache", str(run / "teachers" / t / "cache" / "cache.h5"))]
                out = run / "students" / name
                jobs.append(Job(f"{seed}/train/{name}",
                                [*base, "student", "train", "--name", name, "--seed", str(seed),
                                 *caches, "--out", str(out)], out / "model.pt",
                                [f"{seed}/score/{t}" for t in teachers]))
                label = f"student_{name}" if table == "students" else name
                metrics = run / "metrics" / f"{name}.json"
                jobs.append(Job(f"{seed}/evaluate/{name}",
                                [*base, "evaluate", "--model", str(out), "--name", label,
                                 "--out", str(metrics)], metrics, [f"{seed}/train/{name}"]))
    return jobs


def reuse_default_runs(base: Mapping[str, Any], spec: Mapping[str, Any], root: Path,
                       seeds: Sequence[int]) -> list[str]:
    """Link the `dvc repro` outputs of models the spec defines exactly as params.yaml does.

    Why: the default pipeline has already trained its teacher, baselines and student with the
    params' seed on the same draw; training them again would cost a quarter of the CPU run.
    Only an identical entry with the same seed is reused; returns the names linked.
    """
    paths = {"teachers": "data/teachers", "students": "data/students",
             "metrics": "data/metrics", **(base.get("paths") or {})}
    seed = (base.get("student", {}).get("train", {}) or {}).get("seed")
    teacher_seed = (base.get("teacher", {}).get("train", {}) or {}).get("seed")
    if seed not in seeds or seed != teacher_seed:
        return []
    run = root / f"seed{seed}"
    linked = []
    links: list[tuple[Path, Path]] = []
    for name, entry in (spec.get("teachers") or {}).items():
        if (base.get("teachers") or {}).get(name) == entry:
            for part in ("model", "cache"):
                links.append((REPO / paths["teachers"] / name / part,
                              run / "teachers" / name / part))
            linked.append(name)
    for table in ("baselines", "students"):
        for name, entry in (spec.get(table) or {}).items():
            if (base.get(table) or {}).get(name) == entry:
                links.append((REPO / paths["students"] / name, run / "students" / name))
                for suffix in (".json", ".provenance.json"):
                    links.append((REPO / paths["metrics"] / f"{name}{suffix}",
                                  run / "metrics" / f"{name}{suffix}"))
                linked.append(name)
    if not all(source.exists() for source, _ in links):
        return []  # the default has not run (or not fully): train everything here
    for source, target in links:
        target.parent.mkdir(parents=True, exist_ok=True)
        if not target.exists():
            target.symlink_to(source.resolve())
    return linked


def run_jobs(jobs: Sequence[Job], n_jobs: int, threads: int, log_dir: Path) -> list[str]:
    """Run ``jobs`` respecting deps, ``n_jobs`` at a time; returns the names that failed.

    A failed job's dependents are not started; everything independent still runs, so one
    broken run costs its own rows only. Each job's output goes to ``log_dir/<name>.log``.
    """
    log_dir.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads),
           "PYTHONPATH": f"{REPO}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    pending = {job.name: job for job in jobs}
    done = {job.name for job in jobs if job.done.exists()}
    failed: list[str] = []
    running: dict[Future[int], Job] = {}
    start = time.time()

    def launch(job: Job) -> int:
        log = log_dir / (job.name.replace("/", "_") + ".log")
        with open(log, "w", encoding="utf-8") as handle:
            return subprocess.run(job.cmd, cwd=REPO, env=env, stdout=handle,
                                  stderr=subprocess.STDOUT, check=False).returncode

    with ThreadPoolExecutor(max_workers=n_jobs) as pool:
        while True:
            blocked = blocked_by(pending, failed)
            ready = [j for n, j in pending.items() if n not in done and n not in blocked
                     and j not in running.values() and all(d in done for d in j.deps)]
            for job in ready[: max(0, n_jobs - len(running))]:
                running[pool.submit(launch, job)] = job
            if not running:
                break
            finished, _ = wait(running, return_when=FIRST_COMPLETED)
            for future in finished:
                job = running.pop(future)
                if future.result() == 0 and job.done.exists():
                    done.add(job.name)
                else:
                    failed.append(job.name)
                    print(f"Error: {job.name} failed (log: {log_dir}/"
                          f"{job.name.replace('/', '_')}.log)", file=sys.stderr)
                pending.pop(job.name)
                print(f"[{time.time() - start:6.0f} s] {len(done)}/{len(jobs)} done: "
                      f"{job.name}", flush=True)
    return failed + sorted(blocked_by(pending, failed))


def blocked_by(pending: Mapping[str, Job], failed: Sequence[str]) -> set[str]:
    """Pending jobs whose dependency chain reaches a failed job: they will never start."""
    blocked: set[str] = set()
    grew = True
    while grew:
        new = {n for n, j in pending.items()
               if n not in blocked and any(d in failed or d in blocked for d in j.deps)}
        blocked |= new
        grew = bool(new)
    return blocked


def best_val(root: Path, seeds: Sequence[int], name: str) -> float | None:
    """Mean over seeds of a model's best validation R@1 (its summary.json), None if missing."""
    values = []
    for seed in seeds:
        path = root / f"seed{seed}" / "students" / name / "summary.json"
        if not path.is_file():
            return None
        values.append(float(json.loads(path.read_text())["best_metrics"]["R1"]))
    return sum(values) / len(values)


def select_on_val(root: Path, seeds: Sequence[int], sweeps: Mapping[str, Sequence[str]]
                  ) -> tuple[dict[str, str], str]:
    """Each sweep's row with the highest mean best-validation R@1, and a markdown table."""
    chosen: dict[str, str] = {}
    lines = ["| sweep | row | mean best val R@1 | chosen |", "|---|---|---:|---|"]
    for sweep, rows in sweeps.items():
        scores = {row: best_val(root, seeds, row) for row in rows}
        known = {row: s for row, s in scores.items() if s is not None}
        if known:
            chosen[sweep] = max(known, key=lambda row: known[row])
        for row, score in scores.items():
            text = "missing" if score is None else f"{score:.2f}"
            lines.append(f"| {sweep} | {row} | {text} | "
                         f"{'**yes**' if chosen.get(sweep) == row else ''} |")
    note = (f"\nMean over seeds {', '.join(map(str, seeds))} of each run's best validation "
            "R@1 (the epoch its training selected); the chosen row is the sweep's best on "
            "validation, never on test.\n")
    return chosen, "\n".join(lines) + "\n" + note


def metrics_spec(root: Path, seeds: Sequence[int], label: str, rel: str) -> str:
    """``label=seed42/…,seed1/…`` for ``teachclip report --metrics``."""
    return f"{label}=" + ",".join(str(root / f"seed{s}" / rel) for s in seeds)


def report_commands(params_file: Path, spec: Mapping[str, Any], seeds: Sequence[int],
                    root: Path, chosen: Mapping[str, str]) -> list[list[str]]:
    """The results table (every row, paired), the control table and the mechanism curves."""
    base = [*TEACHCLIP, "--params", str(params_file), "report"]
    specs = [metrics_spec(root, seeds, f"teacher_{t}", f"teachers/{t}/cache/metrics.json")
             for t in spec.get("teachers") or {}]
    specs += [metrics_spec(root, seeds, n, f"metrics/{n}.json")
              for n in spec.get("baselines") or {}]
    specs += [metrics_spec(root, seeds, f"student_{n}", f"metrics/{n}.json")
              for n in spec.get("students") or {}]
    reference = spec["reference"]
    paired = [f"{n}={reference}" for sweep in (spec.get("sweeps") or {}).values() for n in sweep
              if n in (spec.get("baselines") or {})]
    table = [*base, *(a for s in specs for a in ("--metrics", s)),
             "--paired-default", reference, *(a for p in paired for a in ("--paired", p)),
             "--out", str(root / "results.md"), "--plot", str(root / "results.tsv")]
    twin = metrics_spec(root, seeds, reference, f"metrics/{reference}.json")
    method = metrics_spec(root, seeds, "student_xclip", "metrics/xclip.json")
    commands = [table]
    if "xclip" in (spec.get("students") or {}):
        commands.append([*base, "--metrics", twin, "--metrics", method, "--paired-default",
                         reference, "--out", str(root / "mechanism.md"),
                         "--curves", str(root / "curves.png")])
    control = chosen.get(spec.get("control") or "")
    if control and "xclip" in (spec.get("students") or {}):
        commands.append([*base, "--metrics", twin,
                         "--metrics", metrics_spec(root, seeds, control, f"metrics/{control}.json"),
                         "--metrics", method, "--paired", f"student_xclip={control}",
                         "--paired", f"{control}={reference}",
                         "--out", str(root / "control.md")])
    return commands


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--spec", type=Path, default=REPO / "bench" / "ablations.yaml")
    parser.add_argument("--params", type=Path, default=REPO / "params.yaml")
    parser.add_argument("--seeds", default="42,1,2", help="comma-separated training seeds")
    parser.add_argument("--data-seed", type=int, default=None,
                        help="render and use this draw of the synthetic set (data.synth.seed)")
    parser.add_argument("--root", type=Path, default=None,
                        help="output folder [default: data/ablations/<spec>[_draw<N>]]")
    parser.add_argument("--jobs", type=int, default=1, help="runs at a time")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch threads per run [default: cores / jobs]")
    parser.add_argument("--stage", choices=("all", "prepare", "train", "report"), default="all")
    parser.add_argument("--only", default=None,
                        help="comma-separated model names of the spec to run (their teachers "
                             "follow), e.g. the rows a CPU budget allows")
    parser.add_argument("--no-reuse", action="store_true",
                        help="train the default's own models again instead of linking the "
                             "`dvc repro` outputs of identical entries")
    args = parser.parse_args(argv)
    seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
    spec = load_spec(args.spec)
    if args.only:
        spec = only_models(spec, [n.strip() for n in args.only.split(",") if n.strip()])
    root = args.root or REPO / "data" / "ablations" / (
        args.spec.stem + (f"_draw{args.data_seed}" if args.data_seed is not None else ""))
    root = root.resolve()
    root.mkdir(parents=True, exist_ok=True)
    base = yaml.safe_load(args.params.read_text(encoding="utf-8"))
    params = merged_params(base, spec, root, args.data_seed)
    params_file = root / "params.yaml"
    params_file.write_text(yaml.safe_dump(params, sort_keys=False), encoding="utf-8")
    threads = args.threads or max(1, (os.cpu_count() or 1) // args.jobs)
    jobs: list[Job] = []
    if args.stage in ("all", "prepare") and args.data_seed is not None:
        jobs += prepare_jobs(params_file, params)
    if args.stage in ("all", "train"):
        train = training_jobs(params_file, spec, seeds, root)
        if args.data_seed is not None:
            clip = clip_job(params_file, params)
            if args.stage == "all":
                clip.deps.append("frames")
            for job in train:
                job.deps.append("clip")
            train.insert(0, clip)
        jobs += train
    if args.data_seed is None and not args.no_reuse:
        reused = reuse_default_runs(base, spec, root, seeds)
        if reused:
            print(f"reusing the default pipeline's seed runs of {', '.join(reused)}")
    failed = run_jobs(jobs, args.jobs, threads, root / "logs") if jobs else []
    if failed:
        print(f"Error: {len(failed)} run(s) did not finish: {', '.join(failed[:8])}; rerun the "
              "same command to retry them (finished runs are kept)", file=sys.stderr)
        return 1
    if args.stage in ("all", "report"):
        chosen, selection = select_on_val(root, seeds, spec.get("sweeps") or {})
        (root / "selection.md").write_text("# Chosen on validation\n\n" + selection,
                                           encoding="utf-8")
        env = {**os.environ, "PYTHONPATH": f"{REPO}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
        for cmd in report_commands(params_file, spec, seeds, root, chosen):
            result = subprocess.run(cmd, cwd=REPO, env=env, check=False)
            if result.returncode:
                return result.returncode
        print(f"wrote {root}/results.md, selection.md, control.md, curves.png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
