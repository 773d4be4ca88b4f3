#!/usr/bin/env bash
# Runs the BENCHMARKS.md load cases against one or more inference servers and
# prints one row per case and run: throughput, latency percentiles, and the
# server's own CPU time per call (read from /proc before and after each case,
# summed over the server's processes and threads, so it stays meaningful when
# other work shares the machine, unlike throughput). A table of medians per
# server and case follows the rows.
#
#   scripts/bench-load.sh [--label NAME] [--runs N] [--duration S] [--cases c1,t1,t100,t1000] SERVER_BIN MODEL [-- EXTRA SERVER FLAGS]
#   scripts/bench-load.sh [--runs N] [--duration S] [--cases ...] --server LABEL SERVER_BIN MODEL [--flags "F..."] [--server ...]
#
# `--flags` after a `--server` passes extra flags to that server only (e.g. the
# same binary with `--batch-max-rows 1` beside its default, in one run).
# SERVER_BIN is one of
#   - an inference-svc binary (e.g. target/release/inference-svc), serving MODEL;
#   - `null`: `taskcast-load --serve-null`, the do-nothing server (MODEL unused, `-`);
#   - `pypeer`: the Python peer in ../shared/peers/pypeer (grpcio + onnxruntime,
#     one process per core), serving MODEL, or with MODEL `-` the model its
#     make_model.py writes. Runs in the project venv (.venv, made by
#     scripts/setup-python.sh); the wheels the peer needs beyond the venv's
#     (numpy, onnx, onnxruntime) are installed into it on first use.
#
# With several --server, all are started at once and measured in turn, run by
# run (run 1 of a case on each server, then run 2, ...), so a change in the
# machine's load hits them alike. TASKCAST_LOAD_BIN overrides the load
# generator (default target/release/taskcast-load); TASKCAST_PYPEER_DIR the peer.
set -euo pipefail
cd "$(dirname "$0")/.."

label="" runs=3 duration=5 only="c1,t1,t100"  # t1000 (1000 candidates, 8 in flight) on request
labels=() bins=() models=() sflags=()
while [[ $# -gt 0 ]]; do
  case "$1" in
    --label) label="$2"; shift 2 ;;
    --runs) runs="$2"; shift 2 ;;
    --duration) duration="$2"; shift 2 ;;
    --cases) only="$2"; shift 2 ;;
    --server) labels+=("$2"); bins+=("$3"); models+=("$4"); sflags+=(""); shift 4 ;;
    --flags) sflags[${#sflags[@]}-1]="$2"; shift 2 ;;
    *) break ;;
  esac
done
if [[ ${#bins[@]} -eq 0 ]]; then
  server="${1:?SERVER_BIN}"; model="${2:?MODEL}"; shift 2
  [[ "${1:-}" == "--" ]] && shift
  labels+=("${label:-$server}"); bins+=("$server"); models+=("$model"); sflags+=("$*")
fi
load="${TASKCAST_LOAD_BIN:-target/release/taskcast-load}"
peer_dir="${TASKCAST_PYPEER_DIR:-../shared/peers/pypeer}"
py=.venv/bin/python
export ORT_DYLIB_PATH="${ORT_DYLIB_PATH:-$PWD/.ort/libonnxruntime.so}" TASKCAST_LOG="${TASKCAST_LOG:-warn}"
tmp=$(mktemp -d)

pids=() ports=()
# A server and every process and thread under it (the peer forks one per core).
tree() { local p; for p in "$@"; do echo "$p"; tree $(pgrep -P "$p" || true); done; }
stat_ticks() { # utime + stime of one process, in clock ticks (10 ms)
  local line rest
  read -r line <"/proc/$1/stat" 2>/dev/null || { echo 0; return; }
  rest=${line##*) }
  # shellcheck disable=SC2086
  set -- $rest
  echo $((${12} + ${13}))
}
cpu() { local t=0 p; for p in $(tree "$1"); do t=$((t + $(stat_ticks "$p"))); done; echo "$t"; }
rss() { # KiB, summed over the tree (shared pages of the peer's processes count in each)
  local t=0 p kb
  for p in $(tree "$1"); do
    kb=$(awk '/VmRSS/ {print $2}' "/proc/$p/status" 2>/dev/null || true)
    t=$((t + ${kb:-0}))
  done
  echo "$t"
}
stop_all() {
  local p
  for p in "${pids[@]}"; do kill -- "-$p" 2>/dev/null || kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$tmp"
}
trap stop_all EXIT

ensure_peer() {
  [[ -x $py ]] || scripts/setup-python.sh >&2
  if ! "$py" -c 'import grpc, grpc_tools, numpy, onnx, onnxruntime' 2>/dev/null; then
    echo "installing the peer's wheels into .venv" >&2
    "$py" -m pip install --quiet --disable-pip-version-check \
      numpy==2.4.6 onnx==1.23.2 onnxruntime==1.32.0 >&2
  fi
}

# Each server in its own session (setsid), so stopping it stops its children.
for i in "${!bins[@]}"; do
  bin="${bins[$i]}" model="${models[$i]}"
  port=$((20000 + RANDOM % 20000 + i))
  case "$bin" in
    null) setsid "$load" --serve-null "127.0.0.1:$port" >/dev/null 2>&1 & ;;
    pypeer)
      ensure_peer
      if [[ "$model" == - ]]; then
        model="$tmp/peer.onnx"
        "$py" "$peer_dir/make_model.py" "$model"
      fi
      setsid "$py" "$peer_dir/server.py" --proto-root proto --port "$port" --model "$model" \
        --procs "$(nproc)" >/dev/null 2>&1 &
      ;;
    *)
      # shellcheck disable=SC2086 # the server's flags, split as words
      setsid "$bin" --listen "127.0.0.1:$port" --metrics-listen "" --model "$model" ${sflags[$i]} >/dev/null 2>&1 &
      ;;
  esac
  pids+=("$!"); ports+=("$port")
done
for i in "${!bins[@]}"; do
  port="${ports[$i]}" ok=""
  for _ in $(seq 300); do
    if "$load" --target "http://127.0.0.1:$port" --duration 0.05 --warmup 0 --json >/dev/null 2>&1; then ok=1; break; fi
    sleep 0.1
  done
  [[ -n $ok ]] || { echo "${labels[$i]}: server on port $port never answered" >&2; exit 1; }
  if [[ "${bins[$i]}" == pypeer ]]; then
    # Every peer process listens on the port (SO_REUSEPORT) before measuring,
    # so connections spread over all of them.
    for _ in $(seq 300); do
      [[ $(ss -Hltn "sport = :$port" | wc -l) -ge $(nproc) ]] && break
      sleep 0.1
    done
  fi
done

cases=(
  "c1|--concurrency 1 --connections 1 --candidates 1"
  "t1|--concurrency 32 --connections 4 --candidates 1 --threads 1"
  "t100|--concurrency 32 --connections 4 --candidates 100 --threads 1"
  "t1000|--concurrency 8 --connections 4 --candidates 1000 --threads 1"
)
printf '| %-10s | %-4s | %3s | %9s | %11s | %8s | %8s | %8s | %11s | %7s | %8s |\n' \
  build case run "calls/s" "scores/s" "p50 µs" "p99 µs" "p99.9 µs" "server µs CPU/call" "load CPU" "RSS MiB"
for c in "${cases[@]}"; do
  name="${c%%|*}"; flags="${c#*|}"
  [[ ",$only," == *",$name,"* ]] || continue
  for r in $(seq "$runs"); do
    for i in "${!bins[@]}"; do
      pid="${pids[$i]}"
      before=$(cpu "$pid")
      # shellcheck disable=SC2086
      json=$("$load" --target "http://127.0.0.1:${ports[$i]}" --duration "$duration" --warmup 1 $flags --json)
      after=$(cpu "$pid")
      python3 - "${labels[$i]}" "$name" "$r" "$before" "$after" "$(rss "$pid")" "$duration" "$tmp/rows.tsv" <<EOF
import json, sys
label, name, run, before, after, rss, duration, rows = sys.argv[1:]
r = json.loads('''$json''')
# Server CPU over warm-up + measured span, per call made in that span (ticks are 10 ms).
span = float(duration) + r["warmup_s"]
per_call = (float(after) - float(before)) * 10_000.0 / max(1.0, r["throughput_rps"] * span)
lat = r["latency_us"]
print(f"| {label:<10} | {name:<4} | {run:>3} | {r['throughput_rps']:9.0f} | {r['scores_per_s']:11.0f} | "
      f"{lat['p50']:8.0f} | {lat['p99']:8.0f} | {lat['p999']:8.0f} | "
      f"{per_call:11.1f} | {r['client_cpu_percent'] or 0:6.0f} % | {int(rss)/1024:8.1f} |"
      + (f" errors {r['errors']}" if r['errors_total'] else ""), flush=True)
with open(rows, "a") as f:
    f.write("\t".join(map(str, [label, name, r["throughput_rps"], r["scores_per_s"], lat["p50"], lat["p99"],
                                lat["p999"], per_call, int(rss) / 1024, r["errors_total"]])) + "\n")
EOF
    done
  done
done

echo
echo "medians of $runs runs:"
python3 - "$tmp/rows.tsv" <<'EOF'
import statistics, sys
rows = [l.rstrip("\n").split("\t") for l in open(sys.argv[1])]
order = []
for r in rows:
    if (r[0], r[1]) not in order:
        order.append((r[0], r[1]))
print("| server | case | calls/s | scores/s | p50 µs | p99 µs | p99.9 µs | server CPU µs/call | RSS MiB | errors |")
print("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|")
for label, case in sorted(order, key=lambda k: (k[1] != "c1", k[1] != "t1", order.index(k))):
    rs = [r for r in rows if (r[0], r[1]) == (label, case)]
    med = lambda j: statistics.median(float(r[j]) for r in rs)
    print(f"| {label} | {case} | {med(2):,.0f} | {med(3):,.0f} | {med(4):,.0f} | {med(5):,.0f} | {med(6):,.0f} | "
          f"{med(7):.1f} | {med(8):.1f} | {sum(int(r[9]) for r in rs)} |".replace(",", " "))
EOF
