#!/usr/bin/env bash
# Relevance temperature sweep (student train --relevance-temperature, method §4): the student S
# (default xclip, the method as published) distilled with its caches' frame relevance read at
# each temperature, on the pipeline's seed, reported next to the no-teacher student B with the
# paired difference. Run after `dvc repro` (reuses its caches). Picks "the best one found" that
# params.yaml's xclip_sharp student uses; one seed, so differences under ~2 R@1 are noise.
# KNOWN lists temperatures the pipeline already trained (T=student name, same settings but T):
# their rows come from its metrics instead of a new run.
#   bench/temperature.sh                       # T = 1, 0.1 (pipeline), 0.3, 0.03, 0.01 (new)
#   TEMPS="0.5 0.2" KNOWN="1=xclip_ts2net" S=xclip_ts2net bench/temperature.sh
set -euo pipefail
cd "$(dirname "$0")/.."
TEMPS="${TEMPS:-0.3 0.03 0.01}"; KNOWN="${KNOWN:-1=xclip 0.1=xclip_sharp}"; S="${S:-xclip}"; B="${B:-baseline_seqTransf_AFA}"
P=params.yaml
py() { python -c "import yaml; p = yaml.safe_load(open('$P')) or {}; $1"; }
path() { py "print({'metrics': 'data/metrics', 'results': 'data/results', **(p.get('paths') or {})}['$1'])"; }
METRICS_DIR=$(path metrics); RESULTS_DIR=$(path results)

specs=(--metrics "$B=$METRICS_DIR/$B.json")
for known in $KNOWN; do
  specs+=(--metrics "student_${S}_T${known%%=*}=$METRICS_DIR/${known#*=}.json")
done
for t in $TEMPS; do
  root="data/temperature/$t"
  [ -f "$root/metrics.json" ] || {
    teachclip --params $P student train --name "$S" --relevance-temperature "$t" \
      --out "$root/student"
    teachclip --params $P evaluate --model "$root/student" --name "student_${S}_T$t" \
      --out "$root/metrics.json"
  }
  specs+=(--metrics "student_${S}_T$t=$root/metrics.json")
done
teachclip --params $P report "${specs[@]}" --paired-default "$B" \
  --out "$RESULTS_DIR/results_temperature.md" --plot "$RESULTS_DIR/results_temperature.tsv"
