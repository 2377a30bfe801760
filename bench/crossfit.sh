#!/usr/bin/env bash
# Cross-fitted soft labels vs the teacher's own (method §4, docs/method.md): for every seed,
# train the K fold teachers of teacher T (each on the train videos outside its fold), score the
# train captions with them (each caption by the fold teacher that never saw its video), distil
# a student from that cache with the settings of students.S, and report it paired with the
# baseline B and with the student distilled from T's own cache, seed by seed.
# Run after `dvc repro` and bench/seeds.sh (reuses their teachers, baselines and students).
#   bench/crossfit.sh                         # T=xclip S=xclip B=baseline_seqTransf_AFA, K=2
#   T=xclip S=xclip_sharp K=3 SEEDS="42 1 2" bench/crossfit.sh
set -euo pipefail
cd "$(dirname "$0")/.."
# SEEDS: 42 = the pipeline's own run (student.train.seed), the others bench/seeds.sh's.
SEEDS="${SEEDS:-42 1 2}"; T="${T:-xclip}"; S="${S:-xclip}"; B="${B:-baseline_seqTransf_AFA}"
K="${K:-2}"; P=params.yaml

py() { python -c "import yaml; p = yaml.safe_load(open('$P')) or {}; $1"; }
path() { py "print({'teachers': 'data/teachers', 'metrics': 'data/metrics', 'results': 'data/results', **(p.get('paths') or {})}['$1'])"; }
TEACHERS_DIR=$(path teachers); METRICS_DIR=$(path metrics); RESULTS_DIR=$(path results)
BASE_SEED=$(py "print(((p.get('student') or {}).get('train') or {}).get('seed', 42))")

cf=(); own=(); base=()
for seed in $SEEDS; do
  if [ "$seed" = "$BASE_SEED" ]; then   # the pipeline's own run
    model="$TEACHERS_DIR/$T/model"; own+=("$METRICS_DIR/$S.json"); base+=("$METRICS_DIR/$B.json")
  else                                  # bench/seeds.sh's runs
    model="data/seeds/$seed/teachers/$T/model"
    own+=("data/seeds/$seed/metrics/$S.json"); base+=("data/seeds/$seed/metrics/$B.json")
  fi
  root="data/crossfit/$seed"
  folds=()
  for ((k = 0; k < K; k++)); do
    [ -f "$root/folds/$k/model.pt" ] || teachclip --params $P teacher train --name "$T" \
      --seed "$seed" --folds "$K" --fold "$k" --out "$root/folds/$k"
    folds+=(--fold-model "$root/folds/$k")
  done
  [ -f "$root/cache/cache.h5" ] || teachclip --params $P teacher score --name "$T" \
    --model "$model" "${folds[@]}" --metrics-split "" --out "$root/cache"
  [ -f "$root/metrics/$S.json" ] || {
    teachclip --params $P student train --name "$S" --seed "$seed" --cache "$root/cache/cache.h5" \
      --out "$root/students/$S"
    teachclip --params $P evaluate --model "$root/students/$S" --name "student_${S}_crossfit" \
      --out "$root/metrics/$S.json"
  }
  cf+=("$root/metrics/$S.json")
done
IFS=,
teachclip --params $P report --metrics "$B=${base[*]}" --metrics "student_$S=${own[*]}" \
  --metrics "student_${S}_crossfit=${cf[*]}" --paired-default "$B" \
  --out "$RESULTS_DIR/results_crossfit.md" --plot "$RESULTS_DIR/results_crossfit.tsv"
