#!/usr/bin/env bash
# Re-run every trained model of the embedded default with other seeds and aggregate the results
# table over seeds (mean ± std). Run after `dvc repro` (reuses data/synth, data/frames.h5 and
# data/clip; seed 42 is the pipeline's own run in data/teachers and data/students).
#   bench/seeds.sh            # seeds 1 and 2, then data/results_seeds.md
#   SEEDS="1 2 3" bench/seeds.sh
set -euo pipefail
cd "$(dirname "$0")/.."
SEEDS="${SEEDS:-1 2}"
P=params.yaml
TEACHERS="xclip ts2net xpool"
STUDENTS="baseline baseline_seqtransf baseline_afa xclip ts2net xpool xclip_ts2net"

for seed in $SEEDS; do
  root="data/seeds/$seed"
  for t in $TEACHERS; do
    [ -f "$root/teachers/$t/cache/metrics.json" ] && continue
    teachclip --params $P teacher train --name "$t" --seed "$seed" --out "$root/teachers/$t/model"
    teachclip --params $P teacher score --name "$t" --model "$root/teachers/$t/model" \
      --out "$root/teachers/$t/cache"
  done
  for s in $STUDENTS; do
    [ -f "$root/metrics/student_$s.json" ] && continue
    caches=()
    case "$s" in
      xclip|ts2net|xpool) caches=(--cache "$root/teachers/$s/cache/cache.h5") ;;
      xclip_ts2net) caches=(--cache "$root/teachers/xclip/cache/cache.h5"
                            --cache "$root/teachers/ts2net/cache/cache.h5") ;;
    esac
    teachclip --params $P student train --name "$s" --seed "$seed" "${caches[@]}" \
      --out "$root/students/$s"
    teachclip --params $P evaluate --model "$root/students/$s" --name "student_$s" \
      --out "$root/metrics/student_$s.json"
  done
done

join() {  # join <relative path>: the seed-42 file plus one per extra seed, comma-separated
  local out="data/$1"
  for seed in $SEEDS; do out="$out,data/seeds/$seed/$1"; done
  echo "$out"
}
teachclip report \
  --metrics "teacher_xclip=$(join teachers/xclip/cache/metrics.json)" \
  --metrics "teacher_ts2net=$(join teachers/ts2net/cache/metrics.json)" \
  --metrics "teacher_xpool=$(join teachers/xpool/cache/metrics.json)" \
  --metrics "baseline_meanP=$(join metrics/student_baseline.json)" \
  --metrics "baseline_seqTransf=$(join metrics/student_baseline_seqtransf.json)" \
  --metrics "baseline_seqTransf_AFA=$(join metrics/student_baseline_afa.json)" \
  --metrics "student_xclip=$(join metrics/student_xclip.json)" \
  --metrics "student_ts2net=$(join metrics/student_ts2net.json)" \
  --metrics "student_xpool=$(join metrics/student_xpool.json)" \
  --metrics "student_xclip_ts2net=$(join metrics/student_xclip_ts2net.json)" \
  --out data/results_seeds.md
