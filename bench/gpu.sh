#!/usr/bin/env bash
# One-GPU benchmark of TeachCLIP's two cost claims, with random weights and synthetic frames
# (no ffmpeg, no downloads, no network):
#   1. training: the ViT-B/32 student step from the teacher cache vs. the same step with an
#      X-CLIP teacher run online every batch (official behaviour), bf16 autocast, eager and
#      torch.compile, batch 60 and 120, plus the teacher forward alone and the input pipeline
#      (bench/train_step.py: one table);
#   2. retrieval: the student's one-vector index vs. the teacher heads for 10k/100k/1M videos
#      (bench/retrieval.py: one table).
# Target: under 5 minutes on one H100 (torch.compile's first compile is most of it).
#
# Usage:  bench/gpu.sh            # CUDA, ViT-B/32, full size
#         bench/gpu.sh --tiny     # CPU, tiny CLIP, seconds (what the test runs); or TINY=1
# Env overrides: PYTHON, STEPS, WARMUP, BATCHES, COMPILE (off|on|both), WORKERS, MODES,
#                IN_MEMORY (1: frames/cache in RAM, default 1 on the GPU), TMP_DIR.
set -euo pipefail
cd "$(dirname "$0")/.."

PY=${PYTHON:-python}
TINY=${TINY:-0}
for arg in "$@"; do
  case "$arg" in
    --tiny) TINY=1 ;;
    -h|--help) sed -n '2,17p' "$0"; exit 0 ;;
    *) echo "unknown argument: $arg (use --tiny)" >&2; exit 2 ;;
  esac
done

if [[ "$TINY" == "1" ]]; then
  # One thread: on a shared small CPU, OpenMP threads spinning against other processes slow
  # the step down by 10-20x, which makes timings meaningless.
  export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1} OPENBLAS_NUM_THREADS=${OPENBLAS_NUM_THREADS:-1}
  export MKL_NUM_THREADS=${MKL_NUM_THREADS:-1}
  TRAIN=(--size tiny --device cpu --amp none
         --batch "${BATCHES:-8,16}" --compile "${COMPILE:-off}"
         --steps "${STEPS:-2}" --warmup "${WARMUP:-1}" --workers "${WORKERS:-0}"
         --modes "${MODES:-student,student+teacher,teacher-fwd,data-file}" --videos 32)
  RETRIEVAL=(--device cpu --sizes 2000,5000 --queries 20 --storage float32
             --teacher-videos 1000 --teacher-queries 2 --repeats 1)
else
  if ! "$PY" -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)'; then
    echo "bench/gpu.sh: no CUDA device (use --tiny for the CPU smoke run)" >&2
    exit 1
  fi
  # Until FramesReader.read stops using h5py fancy indexing (~0.1 s per 224px video), frames
  # are served from RAM for the step rows; the data-file row shows the file path's ceiling.
  MEM=()
  [[ "${IN_MEMORY:-1}" == "1" ]] && MEM=(--in-memory)
  TRAIN=(--size vitb32 --device cuda --amp bf16
         --batch "${BATCHES:-60,120}" --compile "${COMPILE:-both}"
         --steps "${STEPS:-8}" --warmup "${WARMUP:-2}" --workers "${WORKERS:-8}"
         --modes "${MODES:-student,student+teacher,teacher-fwd,data-file}" ${MEM[@]+"${MEM[@]}"})
  RETRIEVAL=(--device cuda --sizes 10000,100000,1000000 --queries 1000
             --storage float16,float32 --teacher-videos 100000 --teacher-queries 16
             --chunk-rows 262144 --teacher-chunk-videos 32768 --chunk-pairs 65536)
fi

# Scratch space: RAM-backed /dev/shm when it has room (checkpoints of ViT-B/32 + AdamW are
# ~1.8 GB per row and are written after the timed steps), else the system temp dir.
if [[ -z "${TMP_DIR:-}" && -d /dev/shm ]]; then
  avail=$(df --output=avail -B1 /dev/shm 2>/dev/null | tail -1 || echo 0)
  if [[ "${avail:-0}" -gt $((16 * 1024 * 1024 * 1024)) ]]; then TMP_DIR=/dev/shm; fi
fi
[[ -n "${TMP_DIR:-}" ]] && TRAIN+=(--tmp-dir "$TMP_DIR")

echo "== training step (bench/train_step.py ${TRAIN[*]})"
"$PY" bench/train_step.py "${TRAIN[@]}"
echo
echo "== retrieval (bench/retrieval.py ${RETRIEVAL[*]})"
"$PY" bench/retrieval.py "${RETRIEVAL[@]}"
