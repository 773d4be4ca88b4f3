#!/usr/bin/env bash
# Large-table benchmark (BENCHMARKS.md, "Scale"): simulated learners written
# into PostgreSQL through the real import path, then for each model family a
# `trainer-svc serve` startup run and an operator Train on that table, each
# timed phase by phase with the trainer's peak RSS. One table row per run.
#
#   scripts/bench-scale.sh [--sizes 1m,3m,10m] [--families linear,mlp]
#                          [--max-training-rows N] [--label NAME] [--reuse-db] [--keep-db]
#   scripts/bench-scale.sh --artifacts [--families linear,mlp] [--replicas 2] [--swaps 6]
#   scripts/bench-scale.sh --budget-cost 500000,250000 [--sizes 1m] [--families linear]
#
# Sizes: 1m, 3m, 10m (about that many attempts: 16 667, 50 000 and 166 667
# learners, log-normal history lengths around 60, `trainer-svc simulate
# --seed 42`), or LEARNERSxATTEMPTS (e.g. 100000x30). The CSVs are cached in
# ~/.cache/taskcast/bench-scale and made once. Each size gets a database
# `taskcast_bench_<size>`, dropped and re-imported on every run (timed, with
# the importer's peak RSS) unless --reuse-db finds it complete; then
# `VACUUM ANALYZE` (what autovacuum does after a bulk load; timed apart).
#
# Per family: the trainer's tables are emptied, `serve` starts (no automatic
# retraining, JSON logs) and trains at startup; then the peak RSS counter is
# reset (/proc/PID/clear_refs) and an operator Train runs beside the active
# version (incumbent scoring included). Phase times and memory come from the
# trainer's `run phase ended` log lines: reading (the training-budget query
# and the counting pass), features, fitting, evaluating, exporting (ONNX
# written and verified), gating, publishing.
# --max-training-rows N passes the budget to serve (default: serve's own).
#
# --artifacts: one table of 100 000 learners × 30 attempts, all of them
# trained on (--max-training-rows 0); per family the artifact's size, then
# --replicas inference replicas subscribe and the active version is promoted
# back and forth --swaps times: for each promotion, the time from the
# Promote call to the moment every replica serves it (read from the
# replicas' /metrics every 10 ms), and each replica's load time (its "trainer
# announced a model" to "model serving" log lines).
#
# --budget-cost N[,N...]: the hold-out cost of a training budget. On each
# size and family, a startup run on every row (--max-training-rows 0) makes
# the active version; then for each N a trainer with --max-training-rows N
# runs an operator Train, whose gate scores the new (budgeted) model and the
# active (unbudgeted, made active again before each) one on the same
# hold-out: the end of each history the budget kept. AUC and log loss of
# both are printed.
#
# Results are appended to ~/.cache/taskcast/bench-scale/results.jsonl and
# printed as tables. Environment: TASKCAST_BENCH_PG (default
# postgres://root@127.0.0.1:5432; the user may create databases),
# TASKCAST_BENCH_BIN (target/release/trainer-svc), TASKCAST_BENCH_CLIENT
# (target/release/taskcast-client), TASKCAST_BENCH_INFERENCE
# (target/release/inference-svc). The machine is whatever it is: note what
# else ran beside the figures.
set -euo pipefail
cd "$(dirname "$0")/.."

sizes="1m,3m,10m" families="linear,mlp" budget="" label="" reuse=0 keep=0
artifacts=0 replicas=2 swaps=6 budget_cost=""
while [[ $# -gt 0 ]]; do
  case "$1" in
    --sizes) sizes="$2"; shift 2 ;;
    --families) families="$2"; shift 2 ;;
    --max-training-rows) budget="$2"; shift 2 ;;
    --label) label="$2"; shift 2 ;;
    --reuse-db) reuse=1; shift ;;
    --keep-db) keep=1; shift ;;
    --artifacts) artifacts=1; shift ;;
    --replicas) replicas="$2"; shift 2 ;;
    --swaps) swaps="$2"; shift 2 ;;
    --budget-cost) budget_cost="$2"; shift 2 ;;
    -h|--help) sed -n '2,51p' "$0"; exit 0 ;;
    *) echo "unknown argument: $1 (--help)" >&2; exit 2 ;;
  esac
done

pg="${TASKCAST_BENCH_PG:-postgres://root@127.0.0.1:5432}"
bin="${TASKCAST_BENCH_BIN:-target/release/trainer-svc}"
client="${TASKCAST_BENCH_CLIENT:-target/release/taskcast-client}"
inference="${TASKCAST_BENCH_INFERENCE:-target/release/inference-svc}"
cache="${XDG_CACHE_HOME:-$HOME/.cache}/taskcast/bench-scale"
results="$cache/results.jsonl"
export ORT_DYLIB_PATH="${ORT_DYLIB_PATH:-$PWD/.ort/libonnxruntime.so}"
mkdir -p "$cache"
work=$(mktemp -d)
# One token per role (the trainer refuses to share one between roles).
for role in admin replica reader; do
  printf 'bench-%s-%s-%s' "$role" "$$" "$RANDOM" >"$work/$role-token"
done
trainer_grpc=127.0.0.1:50152 trainer_metrics=127.0.0.1:9152
pids=()
cleanup() {
  local p
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

for b in "$bin" "$client" "$inference"; do
  [[ -x "$b" ]] && continue
  [[ "$b" == "$inference" && $artifacts -eq 0 ]] && continue
  echo "missing $b: cargo build --release -p trainer-svc -p taskcast-client -p inference-svc" >&2
  exit 1
done

psql_admin() { psql -X -q -At "$pg/postgres" "$@"; }
psql_db() { local db="$1"; shift; psql -X -q -At "$pg/$db" "$@"; }
now() { date +%s.%N; }
minus() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.3f", a - b }'; }

# learners and attempts per learner for a size name
shape() {
  case "$1" in
    1m) echo "16667 60" ;;
    3m) echo "50000 60" ;;
    10m) echo "166667 60" ;;
    *x*) echo "${1%x*} ${1#*x}" ;;
    *) echo "unknown size $1 (1m, 3m, 10m or LEARNERSxATTEMPTS)" >&2; return 1 ;;
  esac
}

# The cached CSV of a size, made once.
csv_for() {
  local size="$1" learners attempts file
  read -r learners attempts < <(shape "$size")
  file="$cache/sim-${learners}x${attempts}-seed42.csv"
  if [[ ! -s "$file" ]]; then
    echo "simulating $learners learners x $attempts attempts -> $file" >&2
    "$bin" simulate --learners "$learners" --attempts "$attempts" --seed 42 --out "$file.tmp" >&2
    mv "$file.tmp" "$file"
  fi
  echo "$file"
}

# Creates and fills taskcast_bench_<size>; prints "rows import_s import_peak_mib vacuum_s".
prepare_db() {
  local size="$1" csv="$2" db="taskcast_bench_${1//[^a-z0-9]/_}" want have
  want=$(($(wc -l <"$csv") - 1))
  if [[ $reuse -eq 1 ]] && have=$(psql_db "$db" -c "SELECT count(*) FROM completed_tasks" 2>/dev/null) \
      && [[ "$have" == "$want" ]]; then
    echo "$db: reusing $have rows" >&2
    echo "$want - - -"
    return
  fi
  psql_admin -c "DROP DATABASE IF EXISTS $db WITH (FORCE)" >/dev/null
  psql_admin -c "CREATE DATABASE $db" >/dev/null
  echo "$db: importing $want rows" >&2
  /usr/bin/time -f "%e %M" -o "$work/import.time" \
    "$bin" import --database-url "$pg/$db" --data "$csv" >&2
  local t0 t1
  t0=$(now)
  psql_db "$db" -c "VACUUM ANALYZE completed_tasks"
  t1=$(now)
  read -r secs kb <"$work/import.time"
  echo "$want $secs $((kb / 1024)) $(minus "$t1" "$t0")"
}

reset_trainer() {
  psql_db "$1" -c "DELETE FROM promotions; DELETE FROM model_versions; DELETE FROM training_runs; DELETE FROM trainer_state;"
}

# Waits until FILE has N lines matching the extended regex PATTERN, up to
# SECS; fails otherwise, and when a run failed.
wait_lines() {
  local file="$1" pattern="$2" n="$3" secs="$4" deadline
  deadline=$(($(date +%s) + secs))
  until [[ $(grep -cE -- "$pattern" "$file" 2>/dev/null || true) -ge $n ]]; do
    if ! kill -0 "$trainer_pid" 2>/dev/null; then
      echo "the trainer exited:" >&2
      tail -5 "$file" >&2
      return 1
    fi
    if grep -q '"training run failed"' "$file" 2>/dev/null; then
      echo "a training run failed:" >&2
      grep '"training run failed"' "$file" >&2
      return 1
    fi
    if [[ $(date +%s) -gt $deadline ]]; then
      echo "timed out waiting for $n x '$pattern' in $file" >&2
      tail -5 "$file" >&2
      return 1
    fi
    sleep 0.2
  done
}

start_trainer() { # db family budget log
  local extra=()
  [[ -n "$3" ]] && extra=(--max-training-rows "$3")
  "$bin" serve --database-url "$pg/$1" --family "$2" "${extra[@]}" \
    --listen "$trainer_grpc" --metrics-listen "$trainer_metrics" \
    --retrain-every 0 --report-interval 0 --log-format json \
    --admin-token-file "$work/admin-token" --replica-token-file "$work/replica-token" \
    --reader-token-file "$work/reader-token" >"$4" 2>&1 &
  trainer_pid=$!
  pids+=("$trainer_pid")
  # Ready once the gRPC port accepts (the health probe answers after it binds).
  local deadline=$(($(date +%s) + 120))
  until curl -fs "http://$trainer_metrics/healthz" >/dev/null 2>&1; do
    if ! kill -0 "$trainer_pid" 2>/dev/null || [[ $(date +%s) -gt $deadline ]]; then
      echo "the trainer did not start:" >&2
      tail -5 "$4" >&2
      return 1
    fi
    sleep 0.1
  done
}

stop() { kill "$1" 2>/dev/null || true; wait "$1" 2>/dev/null || true; }

# Phase lines of the N-th run in a trainer log, as one JSON result.
summarise_run() { # log n size family trigger rows import_s import_peak vacuum_s
  python3 - "$@" "$label" "$budget" <<'PY'
import json, sys
log, n, size, family, trigger, rows, imp_s, imp_mib, vac_s, label, budget = sys.argv[1:12]
runs, order = {}, []
for line in open(log):
    try:
        e = json.loads(line)
    except ValueError:
        continue
    f = e.get("fields", {})
    if f.get("message") == "run phase ended":
        r = f["run"]
        if r not in runs:
            runs[r] = {}
            order.append(r)
        runs[r][f["phase"]] = (f["seconds"], f.get("peak_rss_mib"), f.get("rss_mib"))
    if f.get("message") == "training run finished":
        finished = f
run = runs[order[int(n) - 1]]
num = lambda v: None if v in ("-", "") else float(v)
out = {
    "label": label, "size": size, "family": family, "trigger": trigger,
    "budget": budget or "default", "table_rows": int(rows),
    "import_s": num(imp_s), "import_peak_mib": num(imp_mib), "vacuum_s": num(vac_s),
    "phases": {p: round(v[0], 2) for p, v in run.items()},
    "total_s": round(sum(v[0] for v in run.values()), 2),
    "peak_mib": round(max((v[1] or 0) for v in run.values()), 1),
}
print(json.dumps(out))
PY
}

run_size() {
  local size="$1" csv db rows imp_s imp_mib vac_s fam log used
  csv=$(csv_for "$size")
  read -r rows imp_s imp_mib vac_s < <(prepare_db "$size" "$csv")
  db="taskcast_bench_${size//[^a-z0-9]/_}"
  IFS=, read -r -a fams <<<"$families"
  for fam in "${fams[@]}"; do
    reset_trainer "$db"
    log="$cache/serve-${size}-${fam}-budget-${budget:-default}${label:+-$label}.log"
    echo "$size $fam: startup run" >&2
    start_trainer "$db" "$fam" "$budget" "$log"
    wait_lines "$log" '"training run finished"' 1 7200
    used=$(psql_db "$db" -c "SELECT rows_used FROM training_runs ORDER BY started_at DESC LIMIT 1")
    summarise_run "$log" 1 "$size" "$fam" startup "$rows" "$imp_s" "$imp_mib" "$vac_s" \
      | python3 -c 'import json,sys; d=json.loads(sys.stdin.read()); d["rows_used"]=int(sys.argv[1]); print(json.dumps(d))' "$used" \
      | tee -a "$results"
    echo 5 >"/proc/$trainer_pid/clear_refs" || echo "cannot reset the peak RSS counter" >&2
    echo "$size $fam: operator Train" >&2
    "$client" --trainer "http://$trainer_grpc" --admin-token-file "$work/admin-token" \
      --reader-token-file "$work/reader-token" train --wait --wait-timeout 7200 >"$work/train.out"
    wait_lines "$log" '"training run finished"' 2 600
    used=$(psql_db "$db" -c "SELECT rows_used FROM training_runs ORDER BY started_at DESC LIMIT 1")
    summarise_run "$log" 2 "$size" "$fam" operator "$rows" - - - \
      | python3 -c 'import json,sys; d=json.loads(sys.stdin.read()); d["rows_used"]=int(sys.argv[1]); print(json.dumps(d))' "$used" \
      | tee -a "$results"
    stop "$trainer_pid"
  done
  if [[ $keep -eq 0 ]]; then
    psql_admin -c "DROP DATABASE IF EXISTS $db WITH (FORCE)" >/dev/null
  fi
}

# The budget's hold-out cost on one size: see --budget-cost.
run_budget_cost() {
  local size="$1" csv db rows imp_s imp_mib vac_s fam log n k=0
  csv=$(csv_for "$size")
  read -r rows imp_s imp_mib vac_s < <(prepare_db "$size" "$csv")
  db="taskcast_bench_${size//[^a-z0-9]/_}"
  IFS=, read -r -a fams <<<"$families"
  IFS=, read -r -a budgets <<<"$budget_cost"
  for fam in "${fams[@]}"; do
    reset_trainer "$db"
    log="$cache/serve-cost-${size}-${fam}${label:+-$label}.log"
    start_trainer "$db" "$fam" 0 "$log"
    wait_lines "$log" '"training run finished"' 1 7200
    stop "$trainer_pid"
    local full
    full=$(psql_db "$db" -c "SELECT version FROM model_versions WHERE state = 'active'")
    for n in "${budgets[@]}"; do
      k=$((k + 1))
      log="$cache/serve-cost-${size}-${fam}-${n}${label:+-$label}.log"
      start_trainer "$db" "$fam" "$n" "$log"
      "$client" --trainer "http://$trainer_grpc" --admin-token-file "$work/admin-token" \
        --reader-token-file "$work/reader-token" train --wait --wait-timeout 7200 >/dev/null
      wait_lines "$log" '"training run finished"' 1 600
      # The gate may have promoted the budgeted model: the next budget is
      # again judged beside the unbudgeted one.
      if [[ $(psql_db "$db" -c "SELECT version FROM model_versions WHERE state = 'active'") != "$full" ]]; then
        "$client" --trainer "http://$trainer_grpc" --admin-token-file "$work/admin-token" \
          promote "$full" >/dev/null
      fi
      stop "$trainer_pid"
    done
    psql_db "$db" -F $'\t' -c "SELECT rows_used, metrics FROM training_runs ORDER BY started_at" \
      | python3 -c '
import json, sys
size, fam, label, table_rows, budgets = sys.argv[1:6]
runs = [l.rstrip("\n").split("\t") for l in sys.stdin if l.strip()]
full_rows, full = int(runs[0][0]), json.loads(runs[0][1])
for n, (used, m) in zip(budgets.split(","), runs[1:]):
    m = json.loads(m)
    print(json.dumps({"label": label, "budget_cost": fam, "size": size, "table_rows": int(table_rows),
        "budget": int(n), "rows_used": int(used), "full_rows": full_rows,
        "full_own_holdout": {"auc": full["auc"], "logloss": full["logloss"], "holdout_rows": full["holdout_rows"]},
        "budgeted": {"auc": m["auc"], "logloss": m["logloss"], "holdout_rows": m["holdout_rows"]},
        "full_on_budgeted_holdout": {"auc": m.get("active.auc"), "logloss": m.get("active.logloss")}}))
' "$size" "$fam" "$label" "$rows" "$budget_cost" | tee -a "$results"
  done
  if [[ $keep -eq 0 ]]; then
    psql_admin -c "DROP DATABASE IF EXISTS $db WITH (FORCE)" >/dev/null
  fi
}

# /metrics of a replica shows VERSION as its serving model.
serves() { curl -fs "http://$1/metrics" 2>/dev/null | grep -q "model_info{.*version=\"$2\""; }

run_artifacts() {
  local size=100000x30 csv db rows imp_s imp_mib vac_s fam log v1 v2 i r
  csv=$(csv_for "$size")
  read -r rows imp_s imp_mib vac_s < <(prepare_db "$size" "$csv")
  db="taskcast_bench_${size//[^a-z0-9]/_}"
  IFS=, read -r -a fams <<<"$families"
  for fam in "${fams[@]}"; do
    reset_trainer "$db"
    log="$cache/serve-artifacts-${fam}${label:+-$label}.log"
    start_trainer "$db" "$fam" 0 "$log"
    wait_lines "$log" '"training run finished"' 1 7200
    "$client" --trainer "http://$trainer_grpc" --admin-token-file "$work/admin-token" \
      --reader-token-file "$work/reader-token" train --force --wait --wait-timeout 7200 >/dev/null
    wait_lines "$log" '"training run finished"' 2 7200
    read -r v1 v2 < <(psql_db "$db" -F ' ' -c \
      "SELECT string_agg(version, ' ' ORDER BY created_at) FROM model_versions")
    local size_bytes
    size_bytes=$(psql_db "$db" -c "SELECT size_bytes FROM model_versions WHERE version = '$v2'")
    local rpids=() raddrs=()
    for ((r = 0; r < replicas; r++)); do
      "$inference" --listen "127.0.0.1:$((50161 + r))" --metrics-listen "127.0.0.1:$((9161 + r))" \
        --trainer "http://$trainer_grpc" --trainer-token-file "$work/replica-token" --log-format json \
        --replica-name "bench-$r" >"$work/replica-$fam-$r.log" 2>&1 &
      rpids+=($!); pids+=($!); raddrs+=("127.0.0.1:$((9161 + r))")
    done
    for a in "${raddrs[@]}"; do
      local deadline=$(($(date +%s) + 120))
      until serves "$a" "$v2"; do
        [[ $(date +%s) -gt $deadline ]] && { echo "replica $a never served $v2" >&2; return 1; }
        sleep 0.05
      done
    done
    local delays=() target t0
    for ((i = 0; i < swaps; i++)); do
      if ((i % 2 == 0)); then target=$v1; else target=$v2; fi
      t0=$(now)
      "$client" --trainer "http://$trainer_grpc" --admin-token-file "$work/admin-token" promote "$target" >/dev/null
      for a in "${raddrs[@]}"; do
        until serves "$a" "$target"; do sleep 0.01; done
      done
      delays+=("$(minus "$(now)" "$t0")")
    done
    python3 - "$fam" "$size_bytes" "$label" "${delays[*]}" "$work"/replica-"$fam"-*.log <<'PY' | tee -a "$results"
import json, sys
from datetime import datetime
fam, size_bytes, label, delays, *logs = sys.argv[1:]
def ts(e):
    return datetime.fromisoformat(e["timestamp"].replace("Z", "+00:00")).timestamp()
loads = []
for log in logs:
    announced = None
    for line in open(log):
        try:
            e = json.loads(line)
        except ValueError:
            continue
        m = e.get("fields", {}).get("message")
        if m == "trainer announced a model":
            announced = ts(e)
        elif m == "model serving" and announced is not None:
            loads.append(ts(e) - announced)
            announced = None
d = sorted(float(x) for x in delays.split())
loads.sort()
print(json.dumps({
    "label": label, "artifacts": fam, "learners": 100000, "artifact_bytes": int(size_bytes),
    "promote_to_all_replicas_s": {"median": d[len(d) // 2], "max": d[-1], "n": len(d)},
    "replica_load_s": {"median": loads[len(loads) // 2], "max": loads[-1], "n": len(loads)} if loads else None,
}))
PY
    for r in "${rpids[@]}"; do stop "$r"; done
    stop "$trainer_pid"
  done
  if [[ $keep -eq 0 ]]; then
    psql_admin -c "DROP DATABASE IF EXISTS $db WITH (FORCE)" >/dev/null
  fi
}

start_line=0
[[ -f "$results" ]] && start_line=$(wc -l <"$results")
if [[ $artifacts -eq 1 ]]; then
  run_artifacts
elif [[ -n "$budget_cost" ]]; then
  IFS=, read -r -a size_list <<<"$sizes"
  for s in "${size_list[@]}"; do run_budget_cost "$s"; done
else
  IFS=, read -r -a size_list <<<"$sizes"
  for s in "${size_list[@]}"; do run_size "$s"; done
fi

# The tables of this invocation's results.
python3 - "$results" "$start_line" <<'PY'
import json, sys
path, skip = sys.argv[1], int(sys.argv[2])
rows = [json.loads(l) for l in open(path).readlines()[skip:] if l.strip()]
runs = [r for r in rows if "phases" in r]
if runs:
    cols = ["reading", "features", "fitting", "evaluating", "exporting", "gating", "publishing"]
    print("\n| size | family | run | budget | table rows | rows read | "
          + " | ".join(c + " s" for c in cols) + " | total s | peak MiB | import s (peak MiB) |")
    print("|---|---|---|---|---:|---:|" + "---:|" * len(cols) + "---:|---:|---|")
    for r in runs:
        ph = [str(r["phases"].get(c, "-")) for c in cols]
        imp = "-"
        if r.get("import_s") is not None:
            imp = "%.1f (%.0f) + vacuum %.1f" % (r["import_s"], r["import_peak_mib"], r["vacuum_s"])
        print("| %s | %s | %s | %s | {:,} | {:,} | %s | %s | %.0f | %s |".format(
            r["table_rows"], r.get("rows_used", 0))
            % (r["size"], r["family"], r["trigger"], r["budget"], " | ".join(ph),
               r["total_s"], r["peak_mib"], imp))
costs = [r for r in rows if "budget_cost" in r]
if costs:
    print("\n| size | family | budget | rows read | hold-out rows | budgeted model AUC / log loss "
          "| unbudgeted model, same hold-out | unbudgeted model, its own hold-out |")
    print("|---|---|---:|---:|---:|---|---|---|")
    for c in costs:
        b, f, o = c["budgeted"], c["full_on_budgeted_holdout"], c["full_own_holdout"]
        print("| %s | %s | {:,} | {:,} | {:,} | %.4f / %.4f | %.4f / %.4f | %.4f / %.4f ({:,} rows) |".format(
            c["budget"], c["rows_used"], int(b["holdout_rows"]), int(o["holdout_rows"]))
            % (c["size"], c["budget_cost"], b["auc"], b["logloss"], f["auc"], f["logloss"],
               o["auc"], o["logloss"]))
arts = [r for r in rows if "artifacts" in r]
if arts:
    print("\n| family | learners | artifact bytes | Promote -> every replica serving, median / max s "
          "| replica load, median / max s |")
    print("|---|---:|---:|---|---|")
    for a in arts:
        p = a["promote_to_all_replicas_s"]
        l = a["replica_load_s"] or {"median": float("nan"), "max": float("nan")}
        print("| %s | {:,} | {:,} | %.3f / %.3f (n=%d) | %.3f / %.3f |".format(
            a["learners"], a["artifact_bytes"])
            % (a["artifacts"], p["median"], p["max"], p["n"], l["median"], l["max"]))
PY
