#!/usr/bin/env bash
# Re-run every trained model of the pipeline with other seeds and aggregate the results table
# over seeds (mean ± std). Run after `dvc repro` (reuses the dataset, frames.h5 and the CLIP;
# seed 42 is the pipeline's own run). Teachers, baselines and students are read from params.yaml,
# so a model added there is re-seeded too (a teacher with `cross_fit: K` retrains its K fold teachers
# too). The report's `report:` section applies (e.g. `paired_default`: every student's per-seed
# difference from the same-architecture student trained without a teacher).
#   bench/seeds.sh            # seeds 1 and 2, then data/results/results_seeds.md
#   SEEDS="1 2 3" bench/seeds.sh
set -euo pipefail
cd "$(dirname "$0")/.."
SEEDS="${SEEDS:-1 2}"
P=params.yaml

py() { python -c "import yaml; p = yaml.safe_load(open('$P')) or {}; $1"; }
TEACHERS=$(py "print(' '.join(p.get('teachers') or {}))")
BASELINES=$(py "print(' '.join(p.get('baselines') or {}))")
STUDENTS=$(py "print(' '.join(p.get('students') or {}))")
path() { py "print({'teachers': 'data/teachers', 'metrics': 'data/metrics', 'results': 'data/results', **(p.get('paths') or {})}['$1'])"; }
TEACHERS_DIR=$(path teachers); METRICS_DIR=$(path metrics); RESULTS_DIR=$(path results)

for seed in $SEEDS; do
  root="data/seeds/$seed"
  for t in $TEACHERS; do
    [ -f "$root/teachers/$t/cache/metrics.json" ] && continue
    teachclip --params $P teacher train --name "$t" --seed "$seed" --out "$root/teachers/$t/model"
    teachclip --params $P teacher score --name "$t" --model "$root/teachers/$t/model" \
      --out "$root/teachers/$t/cache"
  done
  for s in $BASELINES $STUDENTS; do
    [ -f "$root/metrics/$s.json" ] && continue
    caches=()
    for t in $(py "print(' '.join(((p.get('students') or {}).get('$s') or {}).get('teachers') or []))"); do
      caches+=(--cache "$root/teachers/$t/cache/cache.h5")
    done
    teachclip --params $P student train --name "$s" --seed "$seed" "${caches[@]}" \
      --out "$root/students/$s"
    prefix=""; [ ${#caches[@]} -gt 0 ] && prefix="student_"
    teachclip --params $P evaluate --model "$root/students/$s" --name "$prefix$s" \
      --out "$root/metrics/$s.json"
  done
done

join() {  # join <seed-42 file> <relative path under data/seeds/N>: comma-separated seed files
  local out="$1"
  for seed in $SEEDS; do out="$out,data/seeds/$seed/$2"; done
  echo "$out"
}
specs=()
for t in $TEACHERS; do
  specs+=(--metrics "teacher_$t=$(join "$TEACHERS_DIR/$t/cache/metrics.json" "teachers/$t/cache/metrics.json")")
done
for b in $BASELINES; do
  specs+=(--metrics "$b=$(join "$METRICS_DIR/$b.json" "metrics/$b.json")")
done
for s in $STUDENTS; do
  specs+=(--metrics "student_$s=$(join "$METRICS_DIR/$s.json" "metrics/$s.json")")
done
teachclip --params $P report "${specs[@]}" --out "$RESULTS_DIR/results_seeds.md" \
  --plot "$RESULTS_DIR/results_seeds.tsv" --plot "$RESULTS_DIR/results_seeds.png"
