#!/usr/bin/env python3
"""Tables from scripts/ablation.sh's JSON files: per file and configuration,
AUC / ECE (and MAE s, 80 % cover where times exist) of linear, mlp (mean and
spread over seeds), pretrained and auto, with items and trained without them.

    scripts/ablation_table.py OUT
"""
import glob
import json
import os
import statistics
import sys
from collections import defaultdict

out = sys.argv[1]
runs = defaultdict(dict)  # (file, config) -> seed -> models
chose = {}
for path in sorted(glob.glob(os.path.join(out, "*.json"))):
    name, config, seed = os.path.basename(path)[: -len(".json")].rsplit(".", 2)
    with open(path) as f:
        v = json.load(f)
    runs[(name, config)][int(seed)] = v["models"]
    if "auto_chose" in v:
        chose[(name, config)] = v["auto_chose"]["auto"]


def fmt(m, key, digits=4):
    x = m.get(key) if m else None
    return "–" if x is None else f"{x:.{digits}f}"


def mlp_cell(seeds, key, suffix=""):
    vals = [s.get("mlp" + suffix, {}).get(key) for s in seeds.values()]
    vals = [x for x in vals if x is not None]
    if not vals:
        return "–"
    if len(vals) == 1:
        return f"{vals[0]:.4f}"
    return f"{statistics.mean(vals):.4f} ± {statistics.pstdev(vals):.4f}"


order = ["v1", "v2", "v2-decay", "v2-gaps", "v2-clock"]
files = sorted({k[0] for k in runs})
for name in files:
    print(f"\n#### {name}\n")
    print("| features | linear AUC / ECE | mlp AUC (3 seeds) | mlp ECE | pretrained AUC / ECE | auto (picks) AUC / ECE | linear MAE s / cover80 | no items: linear AUC / ECE | no items: mlp AUC |")
    print("|---|---|---|---|---|---|---|---|---|")
    for config in order:
        seeds = runs.get((name, config))
        if not seeds:
            continue
        m = seeds.get(7, {})
        lin, pre, auto = m.get("linear"), m.get("pretrained"), m.get("auto")
        nolin = m.get("linear (trained without items)")
        print(
            f"| {config} | {fmt(lin, 'auc')} / {fmt(lin, 'ece')} | {mlp_cell(seeds, 'auc')} | {mlp_cell(seeds, 'ece')}"
            f" | {fmt(pre, 'auc')} / {fmt(pre, 'ece')} | {fmt(auto, 'auc')} / {fmt(auto, 'ece')} ({chose.get((name, config), '?')})"
            f" | {fmt(lin, 'mae_seconds', 2)} / {fmt(lin, 'interval_coverage', 3)}"
            f" | {fmt(nolin, 'auc')} / {fmt(nolin, 'ece')} | {mlp_cell(seeds, 'auc', ' (trained without items)')} |"
        )
