#!/usr/bin/env bash
# Render the README's pictures into docs/images/ from a pipeline run.
#   docs/pictures.sh                 # from the outputs of `dvc repro` under data/
#   docs/pictures.sh --small [DIR]   # first run a small pipeline (~3 min on 2 cores) in DIR
#                                    # (default /tmp/teachclip-pictures), then render from it
# Needs matplotlib (pip install -e ".[plots]"). TEACHCLIP overrides the command, e.g.
#   TEACHCLIP="python -m stages.cli" docs/pictures.sh --small
set -euo pipefail
cd "$(dirname "$0")/.."
TC="${TEACHCLIP:-teachclip}"
OUT="${OUT:-docs/images}"
ROOT=data
if [ "${1:-}" = "--small" ]; then
  ROOT="${2:-/tmp/teachclip-pictures}"
  mkdir -p "$ROOT"
  D="$ROOT"
  # A small version of the embedded default: 96/16/32 videos, 8 frames at 32 px, few epochs.
  [ -d "$D/synth" ] || $TC data synth --out "$D/synth" --n-train 96 --n-val 16 --n-test 32 \
      --min-duration 8 --max-duration 10 --max-segments 2
  [ -f "$D/frames.h5" ] || $TC frames --manifest "$D/synth" --out "$D/frames.h5" --size 32 \
      --max-frames 8
  [ -d "$D/clip" ] || $TC clip pretrain --frames "$D/frames.h5" --manifest "$D/synth" \
      --segments "$D/synth/segments.csv" --out "$D/clip" --epochs 15 --batch-size 64
  common=(--frames "$D/frames.h5" --manifest "$D/synth" --clip "$D/clip" --batch-size 32
          --lr 0.002 --coef-lr 0.3 --epochs 6 --log-every 2)
  [ -d "$D/teachers/xclip/model" ] || $TC teacher train --name xclip "${common[@]}" \
      --out "$D/teachers/xclip/model"
  [ -d "$D/teachers/xclip/cache" ] || $TC teacher score --name xclip \
      --model "$D/teachers/xclip/model" --frames "$D/frames.h5" --manifest "$D/synth" \
      --out "$D/teachers/xclip/cache"
  train() {  # train NAME SEED [student options...]
    local name="$1" seed="$2"; shift 2
    local dir="$D/students/$name" metrics="$D/metrics/student_$name.json"
    [ "$seed" = 42 ] || { dir="$D/seeds/$seed/students/$name"
                          metrics="$D/seeds/$seed/metrics/student_$name.json"; }
    [ -d "$dir" ] || $TC student train "${common[@]}" --seed "$seed" --out "$dir" "$@"
    [ -f "$metrics" ] || $TC evaluate --model "$dir" --frames "$D/frames.h5" \
        --manifest "$D/synth" --name "student_$name" --out "$metrics"
  }
  for seed in 42 1; do
    train baseline "$seed" --temporal meanP --aggregation mean
    train baseline_afa "$seed"
    train xclip "$seed" --cache "$D/teachers/xclip/cache/cache.h5"
  done
fi
mkdir -p "$OUT"

# results.png and curves.png: every model whose metrics exist (seed runs joined by commas).
specs=()
add() {  # add NAME RELATIVE_METRICS_PATH
  local files="" f
  for f in "$ROOT/$2" "$ROOT"/seeds/*/"$2"; do [ -f "$f" ] && files="${files:+$files,}$f"; done
  [ -n "$files" ] && specs+=(--metrics "$1=$files")
  return 0
}
for t in xclip ts2net xpool; do add "teacher_$t" "teachers/$t/cache/metrics.json"; done
add baseline_meanP metrics/student_baseline.json
add baseline_seqTransf metrics/student_baseline_seqtransf.json
add baseline_seqTransf_AFA metrics/student_baseline_afa.json
for s in xclip ts2net xpool xclip_ts2net; do add "student_$s" "metrics/student_$s.json"; done
$TC report "${specs[@]}" --out "$ROOT/results.md" --plot "$OUT/results.png" \
    --curves "$OUT/curves.png"

# hits.png: the best student's top 5 for the first test caption, frames from frames.h5.
student="$ROOT/students/xclip_ts2net"
[ -d "$student" ] || student="$ROOT/students/xclip"
query=$(python3 -c "import csv,sys; r=[x for x in csv.DictReader(open(sys.argv[1])) \
if x['split']=='test']; print(r[0]['text'])" "$ROOT/synth/captions.csv")
$TC index --model "$student" --frames "$ROOT/frames.h5" --manifest "$ROOT/synth" --split test \
    --out "$ROOT/pictures_index.h5"
$TC search "$query" --index "$ROOT/pictures_index.h5" --model "$student" --top-k 5 \
    --sheet "$OUT/hits.png" --frames "$ROOT/frames.h5" --sheet-frames 6

# relevance.png: X-CLIP's frame relevance for a train caption whose video has two segments,
# next to the student's AFA weights.
caption=$(python3 -c "import csv,sys; seg=[x['video_id'] for x in csv.DictReader(open(sys.argv[1]))]
two={v for v in seg if seg.count(v)>1}; caps=[x for x in csv.DictReader(open(sys.argv[2]))
if x['split']=='train' and x['video_id'] in two]; print(caps[0]['caption_id'])" \
  "$ROOT/synth/segments.csv" "$ROOT/synth/captions.csv")
$TC cache show "$ROOT/teachers/xclip/cache/cache.h5" "$caption" --frames "$ROOT/frames.h5" \
    --manifest "$ROOT/synth" --student "$student" --sheet "$OUT/relevance.png"
ls -l "$OUT"
