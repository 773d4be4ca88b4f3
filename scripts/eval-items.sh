#!/usr/bin/env bash
# The EVALUATION.md "without item ids" tables: for each shared dataset,
#   1. `eval` on a copy with every item_id blanked (the original app's own
#      shape: tasks generated per topic and difficulty), every family;
#   2. `eval --hidden-items` on the file as it is: each family trained with
#      items, scored with items, with items hidden at request time, and beside
#      a model trained without items, on the same hold-out attempts.
#   scripts/eval-items.sh [DATA_DIR] [OUT_DIR]
# Uses the release build (cargo build --release -p trainer-svc).
set -euo pipefail
cd "$(dirname "$0")/.."
DATA=${1:-../shared/data}
OUT=${2:-target/eval-items}
BIN=${TASKCAST_TRAINER_BIN:-target/release/trainer-svc}
export ORT_DYLIB_PATH=${ORT_DYLIB_PATH:-$PWD/.ort/libonnxruntime.so}
mkdir -p "$OUT"
for f in assist2009_rt assist2009 assist2017; do
  src=$DATA/$f.csv.gz
  [[ -f $src ]] || { echo "missing $src" >&2; exit 1; }
  # item_id is the second column and never quoted in these files; topics
  # may hold quoted commas, which awk's split and re-join leave intact.
  zcat "$src" | awk -F, 'BEGIN { OFS = "," } NR == 1 { print; next } { $2 = ""; print }' \
    > "$OUT/${f}_noitem.csv"
  echo "== $f without item ids"
  "$BIN" eval --data "$OUT/${f}_noitem.csv" | tee "$OUT/$f.noitem.txt"
  echo "== $f with items, items hidden at request time, trained without items"
  "$BIN" eval --data "$src" --hidden-items | tee "$OUT/$f.hidden.txt"
done
