#!/usr/bin/env bash
# Learning curve (issue 13): `trainer-svc eval --json` on nested learner
# subsets of each shared file, with and without item ids, and markdown tables.
#
#   scripts/learning-curve.sh [run] LABEL      # evaluate (cached), then print LABEL's tables
#   scripts/learning-curve.sh table LABEL      # print LABEL's tables only
#   scripts/learning-curve.sh table OLD NEW    # cells read "OLD → NEW"
#   scripts/learning-curve.sh subsets          # only write the subset files
#
# Subsets: the first N learners (file order) with at least 20 attempts, so
# 4 ⊂ 20 ⊂ 100 ⊂ 500; "all" is the whole file as it is (every learner). A
# size larger than the file's count of such learners is skipped. The
# "without items" copy blanks the item_id column of the same rows.
#
# Environment:
#   DATA=../shared/data       where the *.csv.gz files are (relative to the repo root)
#   FILES="assist2009_rt assist2009 assist2017"
#   SIZES="4 20 100 500 all"
#   TRAINER_SVC=target/release/trainer-svc   the binary (build it first:
#                                            cargo build --release -p trainer-svc)
#   CACHE=~/.cache/taskcast/learning-curve   subsets and results (results/LABEL/…)
#   FORCE=1                   re-run evaluations whose result is cached
set -euo pipefail

cd "$(dirname "$0")/.."
DATA=${DATA:-../shared/data}
FILES=${FILES:-"assist2009_rt assist2009 assist2017"}
SIZES=${SIZES:-"4 20 100 500 all"}
TRAINER_SVC=${TRAINER_SVC:-target/release/trainer-svc}
CACHE=${CACHE:-$HOME/.cache/taskcast/learning-curve}
MIN_ATTEMPTS=20

mode=run
case "${1:-}" in
run) shift ;;
table) mode=table; shift ;;
subsets) mode=subsets; shift; set -- none ;;
-h | --help | "")
    sed -n '2,23p' "$0"
    exit 0
    ;;
esac
[ $# -ge 1 ] || { echo "need a LABEL (e.g. before, after)" >&2; exit 2; }

# Writes $CACHE/subsets/FILE/N-items.csv.gz and N-noitems.csv.gz for every
# size at once (one pass over the file); idempotent.
make_subsets() {
    local file=$1
    local out="$CACHE/subsets/$file"
    mkdir -p "$out"
    python3 - "$DATA/$file.csv.gz" "$out" "$MIN_ATTEMPTS" $SIZES <<'PY'
import csv, gzip, os, sys
src, out, min_attempts, sizes = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4:]
wanted = [s for s in sizes]
def path(size, items):
    return os.path.join(out, f"{size}-{'items' if items else 'noitems'}.csv.gz")
missing = [s for s in wanted
           if not os.path.exists(os.path.join(out, f"{s}.skip"))
           and (not os.path.exists(path(s, False))
                or (s != "all" and not os.path.exists(path(s, True))))]
if not missing:
    sys.exit(0)
# First pass: attempts per learner, in file order.
order, counts = [], {}
with gzip.open(src, "rt", newline="") as f:
    r = csv.reader(f)
    header = next(r)
    u = header.index("user_id")
    for row in r:
        if row[u] not in counts:
            counts[row[u]] = 0
            order.append(row[u])
        counts[row[u]] += 1
eligible = [x for x in order if counts[x] >= min_attempts]
rank = {x: i for i, x in enumerate(eligible)}
limits = {}
for s in missing:
    if s == "all":
        limits[s] = None
    elif int(s) <= len(eligible):
        limits[s] = int(s)
    else:
        print(f"{os.path.basename(src)}: only {len(eligible)} learners with >= {min_attempts} attempts, no subset of {s}", file=sys.stderr)
        open(os.path.join(out, f"{s}.skip"), "w").close()
writers = {}
files = []
for s, n in limits.items():
    for items in ([True, False] if s != "all" else [False]):
        tmp = path(s, items) + ".tmp"
        f = gzip.open(tmp, "wt", newline="", compresslevel=3)
        files.append((f, tmp, path(s, items)))
        w = csv.writer(f, lineterminator="\n")
        w.writerow(header)
        writers[(s, items)] = (n, w)
item = header.index("item_id")
with gzip.open(src, "rt", newline="") as f:
    r = csv.reader(f)
    next(r)
    for row in r:
        k = rank.get(row[u])
        blank = None
        for (s, items), (n, w) in writers.items():
            if n is not None and (k is None or k >= n):
                continue
            if items:
                w.writerow(row)
            else:
                if blank is None:
                    blank = list(row)
                    blank[item] = ""
                w.writerow(blank)
for f, tmp, final in files:
    f.close()
    os.replace(tmp, final)
PY
}

run_one() {
    local file=$1 size=$2 items=$3 label=$4
    local res="$CACHE/results/$label/$file/$size-$items.json"
    [ -s "$res" ] && [ -z "${FORCE:-}" ] && return 0
    local csv="$CACHE/subsets/$file/$size-$items.csv.gz"
    [ "$size" = all ] && [ "$items" = items ] && csv="$DATA/$file.csv.gz"
    [ -e "$csv" ] || return 0
    mkdir -p "$(dirname "$res")"
    echo "eval $file $size $items" >&2
    local started=$SECONDS
    if "$TRAINER_SVC" eval --json --data "$csv" >"$res.tmp" 2>"${res%.json}.log"; then
        mv "$res.tmp" "$res"
        echo "  $((SECONDS - started)) s" >&2
    else
        echo "  failed (see ${res%.json}.log)" >&2
        rm -f "$res.tmp"
    fi
}

if [ "$mode" = subsets ]; then
    for file in $FILES; do make_subsets "$file"; done
    exit 0
fi

if [ "$mode" = run ]; then
    label=$1
    [ -x "$TRAINER_SVC" ] || { echo "no $TRAINER_SVC: cargo build --release -p trainer-svc" >&2; exit 1; }
    for file in $FILES; do
        make_subsets "$file"
        for size in $SIZES; do
            for items in items noitems; do
                run_one "$file" "$size" "$items" "$label"
            done
        done
    done
fi

python3 - "$CACHE/results" "$FILES" "$SIZES" "$@" <<'PY'
import json, os, sys
root, files, sizes, labels = sys.argv[1], sys.argv[2].split(), sys.argv[3].split(), sys.argv[4:]
FAMILIES = ["auto", "linear", "mlp", "pretrained"]

def load(label, file, size, items):
    p = os.path.join(root, label, file, f"{size}-{items}.json")
    try:
        with open(p) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None

def best_baseline(models, key):
    bs = [(m[key], n) for n, m in models.items() if n.startswith("baseline_") and m.get(key) is not None]
    return min(bs) if bs else (None, None)

def promoted(r, fam):
    """The gate's first-model rule: log loss (and MAE of log-seconds when
    times are modelled) not worse than any baseline's."""
    m = r["models"].get(fam)
    if not m or m.get("logloss") is None:
        return False
    for n, b in r["models"].items():
        if not n.startswith("baseline_"):
            continue
        if b.get("logloss") is not None and m["logloss"] > b["logloss"]:
            return False
        if m.get("mae_log_seconds") is not None and b.get("mae_log_seconds") is not None \
                and m["mae_log_seconds"] > b["mae_log_seconds"]:
            return False
    return True

def targets(r, fam, size):
    """What issue 13 asks of family `fam` at this size: the list of misses.
    LL: log loss not below every baseline's (the gate would not promote it);
    ECE above 0.05 (0.02 from 100 learners, 0.015 at full size); cover: the
    10-90 % interval's coverage outside 0.78-0.82."""
    m = r["models"][fam]
    miss = []
    if not promoted(r, fam):
        miss.append("LL")
    limit = 0.015 if size == "all" else 0.02 if int(size) >= 100 else 0.05
    if m["ece"] is not None and m["ece"] > limit:
        miss.append(f"ECE>{limit}")
    c = m.get("interval_coverage")
    if c is not None and not 0.78 <= c <= 0.82:
        miss.append("cover")
    return miss

def fmt(v, d):
    return "–" if v is None else f"{v:.{d}f}"

def cell(vals, d):
    vals = [fmt(v, d) for v in vals]
    return vals[0] if len(vals) == 1 else " → ".join(vals)

def verdict(rs, fam, size):
    out = []
    for r in rs:
        if r is None:
            out.append("?")
            continue
        if fam not in r["models"]:
            out.append("–")
            continue
        miss = targets(r, fam, size)
        out.append("✓" if not miss else "✗ " + ", ".join(miss))
    return " → ".join(out)

for file in files:
    for items in ["items", "noitems"]:
        rows = []
        for size in sizes:
            rs = [load(l, file, size, items) for l in labels]
            if all(r is None for r in rs):
                continue
            rows.append((size, rs))
        if not rows:
            continue
        print(f"\n#### {file}, {'with' if items == 'items' else 'without'} item ids\n")
        print("| learners | rows / hold-out | family | log loss | ECE | AUC | best baseline log loss | targets |")
        print("|---|---|---|---|---|---|---|---|")
        for size, rs in rows:
            r0 = next(r for r in rs if r is not None)
            for k, fam in enumerate(FAMILIES):
                g = lambda key: [None if r is None or fam not in r["models"] else r["models"][fam][key] for r in rs]
                bb = [None if r is None else best_baseline(r["models"], "logloss")[0] for r in rs]
                name = best_baseline(r0["models"], "logloss")[1] or ""
                head = (f"{size}", f"{r0['rows']} / {r0['holdout_rows']}") if k == 0 else ("", "")
                chose = [r.get("auto_chose", {}).get(fam) for r in rs if r is not None]
                shown = f"`{fam}`" + (f" ({', '.join(c for c in chose if c)})" if any(chose) else "")
                print(f"| {head[0]} | {head[1]} | {shown} | {cell(g('logloss'), 4)} | {cell(g('ece'), 4)} | "
                      f"{cell(g('auc'), 4)} | {cell(bb, 4) + (' (' + name.replace('baseline_', '') + ')' if k == 0 else '')} | {verdict(rs, fam, size)} |")
        timed = [(s, rs) for s, rs in rows if any(r and r.get("time_modeled") for r in rs)]
        if timed:
            print(f"\nTimes ({file}, {'with' if items == 'items' else 'without'} item ids):\n")
            print("| learners | model | MAE s | median AE s | MAE ln s | cover80 |")
            print("|---|---|---|---|---|---|")
            for size, rs in timed:
                r0 = next(r for r in rs if r is not None)
                bname = best_baseline(r0["models"], "mae_log_seconds")[1]
                for k, fam in enumerate(FAMILIES + ([bname] if bname else [])):
                    g = lambda key: [None if r is None or fam not in r["models"] else r["models"][fam][key] for r in rs]
                    shown = f"`{fam}`" if not fam.startswith("baseline_") else f"best baseline ({fam.replace('baseline_', '')})"
                    print(f"| {size if k == 0 else ''} | {shown} | {cell(g('mae_seconds'), 2)} | {cell(g('median_ae_seconds'), 2)} | "
                          f"{cell(g('mae_log_seconds'), 4)} | {cell(g('interval_coverage'), 3)} |")
print("\nTargets (✓ all met, else the misses): LL — log loss (and MAE of log-seconds when times are")
print("modelled) below every baseline's, so the gate would promote it as a first model; ECE ≤ 0.05,")
print("≤ 0.02 from 100 learners, ≤ 0.015 at full size; cover — 10–90 % interval coverage in 0.78–0.82.")
PY
