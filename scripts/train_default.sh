#!/usr/bin/env bash
# The shipped checkpoint's recipe (docs/learned-model.md, "The shipped checkpoint") as one
# command on the 2-core CPU: three `fourd train` stages, the scenes rendered once and shared.
# Prints each stage's wall time and the total (also in OUT/times.txt); --install copies the
# result to the package's default checkpoint.
#   bash scripts/train_default.sh [OUT (runs/default)] [--install]
# Session 28 on the 2-core CPU: 2071 s in all (docs/learned-model.md).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
OUT="runs/default"
INSTALL=""
for arg in "$@"; do
  case "$arg" in
    --install) INSTALL="--install" ;;
    -*) echo "train_default.sh: unknown option $arg" >&2; exit 2 ;;
    *) OUT="$arg" ;;
  esac
done
FOURD="$ROOT/.venv/bin/fourd"
mkdir -p "$OUT"
: > "$OUT/times.txt"
t_start=$(date +%s)

stage() {  # $1 = stage name, then fourd train options
  local name="$1" t0
  shift
  t0=$(date +%s)
  "$FOURD" train --out "$OUT/$name" --no-progress --threads 2 "$@"
  echo "train_default: $name $(( $(date +%s) - t0 )) s" | tee -a "$OUT/times.txt"
}

# 1: depth, camera and motion from scratch (narrow scale jitter, every point a top mover)
stage stage1 --steps 1500 --frames 5 --time-limit 38 --scale-jitter 0.25 --min-moving 0
for s in stage2 stage3; do  # the same scenes: rendered once
  mkdir -p "$OUT/$s" && ln -sfn "$(cd "$OUT/stage1" && pwd)/clips" "$OUT/$s/clips"
done
# 2: the depth takes its scale from the cost volume (wide jitter), movers must move
stage stage2 --init "$OUT/stage1/model.pt" --steps 1500 --frames 5 --lr 5e-4
# 3: the motion head refines the scene-flow prior (the rest frozen)
stage stage3 --init "$OUT/stage2/model.pt" --motion-prior --train-only motion --steps 750 \
  --frames 5 --lr 5e-4 $INSTALL
total=$(( $(date +%s) - t_start ))
echo "train_default: total $total s on $(nproc) cores" | tee -a "$OUT/times.txt"
echo "train_default: checkpoint $OUT/stage3/model.pt"
