#!/usr/bin/env bash
# Render the README's pictures into docs/images/ from the pipeline's own outputs.
#   dvc repro && bench/seeds.sh && docs/pictures.sh     # the embedded default, three seeds
#   docs/pictures.sh                                     # after `dvc repro` alone: one seed
# results.png / curves.png are the report stage's pictures (the seeds version when
# bench/seeds.sh has run); hits.png and relevance.png are drawn here. Needs matplotlib
# (pip install -e ".[plots]"). TEACHCLIP overrides the command, e.g. "python -m stages.cli".
set -euo pipefail
cd "$(dirname "$0")/.."
TC="${TEACHCLIP:-teachclip}"
OUT="${OUT:-docs/images}"
P=params.yaml
mkdir -p "$OUT"
py() { python3 -c "import yaml; p = yaml.safe_load(open('$P')) or {}; $1"; }
path() { py "print({'dataset': 'data/dataset', 'frames': 'data/frames.h5', 'teachers': 'data/teachers', 'students': 'data/students', 'results': 'data/results', **(p.get('paths') or {})}['$1'])"; }
DATASET=$(path dataset); FRAMES=$(path frames); TEACHERS=$(path teachers)
STUDENTS=$(path students); RESULTS=$(path results)

if [ -f "$RESULTS/results_seeds.png" ]; then
  cp "$RESULTS/results_seeds.png" "$OUT/results.png"
else
  cp "$RESULTS/results.png" "$OUT/results.png"
fi
cp "$RESULTS/curves.png" "$OUT/curves.png"

# hits.png: the last student of params.yaml (the two-teacher one by default), top 5 for the
# first test caption, frames from frames.h5.
name=$(py "print(list(p['students'])[-1])")
teacher=$(py "print(p['students']['$name']['teachers'][0])")
student="$STUDENTS/$name"
query=$(python3 -c "import csv,sys; r=[x for x in csv.DictReader(open(sys.argv[1])) \
if x['split']=='test']; print(r[0]['text'])" "$DATASET/captions.csv")
$TC --params $P index --model "$student" --split test --out "$RESULTS/pictures_index.h5"
$TC search "$query" --index "$RESULTS/pictures_index.h5" --model "$student" --top-k 5 \
    --sheet "$OUT/hits.png" --frames "$FRAMES" --sheet-frames 6

# relevance.png: the student's first teacher's frame relevance for a train caption whose video
# has two informative segments, next to the student's AFA weights.
caption=$(python3 -c "import csv,sys; seg=[x['video_id'] for x in csv.DictReader(open(sys.argv[1]))]
two={v for v in seg if seg.count(v)>1}; caps=[x for x in csv.DictReader(open(sys.argv[2]))
if x['split']=='train' and x['video_id'] in two]; print(caps[0]['caption_id'])" \
  "$DATASET/segments.csv" "$DATASET/captions.csv")
$TC cache show "$TEACHERS/$teacher/cache/cache.h5" "$caption" --frames "$FRAMES" \
    --manifest "$DATASET" --student "$student" --sheet "$OUT/relevance.png"
ls -l "$OUT"
