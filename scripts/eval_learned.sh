#!/usr/bin/env bash
# Figures of the learned backend (docs/measurements.md): synthetic seeds (development 0-3,
# held out 100-103, never used for training or tuning; SEEDS overrides) next to the rgbd backend on the same
# clips, and the real 7-Scenes sample. Usage: scripts/eval_learned.sh OUT [CHECKPOINT]
set -euo pipefail
OUT=${1:?output folder}
CKPT=${2:-}
FOURD=${FOURD:-.venv/bin/fourd}
mkdir -p "$OUT"
ARGS=()
[ -n "$CKPT" ] && ARGS=(--checkpoint "$CKPT")
for seed in ${SEEDS:-0 1 2 3 100 101 102 103}; do
  clip="$OUT/clips/s$seed"
  [ -d "$clip" ] || $FOURD synth --seed "$seed" --frames 48 --size 256x192 --fps 30 --out "$clip" >/dev/null
  $FOURD eval --backend learned "${ARGS[@]}" --input "$clip" --width 0 --json "$OUT/learned_s$seed.json" >/dev/null
  $FOURD eval --backend rgbd --input "$clip" --width 0 --json "$OUT/rgbd_s$seed.json" >/dev/null
  echo "seed $seed done"
done
