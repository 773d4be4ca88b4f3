#!/usr/bin/env bash
# The feature-group ablation of EVALUATION.md ("Feature schema v2"): for each
# file and each configuration (every v2 group off = v1; all on = v2; each v2
# group off in turn), `trainer-svc eval --hidden-items --json` with every
# family at seed 7, then `mlp` again at seeds 8 and 9. One JSON file per run
# in OUT; scripts/ablation_table.py turns them into the tables.
#
#   scripts/ablation.sh OUT FILE...        (TRAINER=path/to/trainer-svc)
#
# A file's name (without .csv.gz) names its rows in the tables.
set -euo pipefail
out=$1; shift
trainer=${TRAINER:-target/release/trainer-svc}
mkdir -p "$out"
configs=("v1:--without v2" "v2:" "v2-decay:--without decay" "v2-gaps:--without gaps" "v2-clock:--without clock")
for file in "$@"; do
  name=$(basename "$file"); name=${name%.gz}; name=${name%.csv}
  for c in "${configs[@]}"; do
    label=${c%%:*}; flags=${c#*:}
    # Only a file with start times has a clock to switch off.
    header=$(zcat -f "$file" | head -1 || true)
    if [[ $label == v2-clock && $header != *started_at* ]]; then continue; fi
    for seed in 7 8 9; do
      dest="$out/$name.$label.$seed.json"
      [[ -s $dest ]] && continue
      families=()
      [[ $seed != 7 ]] && families=(--family mlp)
      # shellcheck disable=SC2086
      "$trainer" eval --data "$file" --hidden-items --json --seed "$seed" $flags "${families[@]}" >"$dest.tmp"
      mv "$dest.tmp" "$dest"
      echo "$dest"
    done
  done
done
