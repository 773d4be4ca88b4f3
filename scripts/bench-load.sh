#!/usr/bin/env bash
# Runs the BENCHMARKS.md load cases against one inference server binary and
# prints one row per case: throughput, latency percentiles, and the server's
# own CPU time per call (read from /proc before and after each case, so it
# stays meaningful when other work shares the machine, unlike throughput).
#
#   scripts/bench-load.sh [--label NAME] [--runs N] [--duration S] [--cases c1,t1,t100] SERVER_BIN MODEL [-- EXTRA SERVER FLAGS]
#
# SERVER_BIN is an inference-svc binary (e.g. target/release/inference-svc)
# or `null` for `taskcast-load --serve-null` (the load generator's ceiling).
# TASKCAST_LOAD_BIN overrides the load generator (default target/release/taskcast-load).
set -euo pipefail
cd "$(dirname "$0")/.."

label="" runs=3 duration=5 only="c1,t1,t100"
while [[ $# -gt 0 ]]; do
  case "$1" in
    --label) label="$2"; shift 2 ;;
    --runs) runs="$2"; shift 2 ;;
    --duration) duration="$2"; shift 2 ;;
    --cases) only="$2"; shift 2 ;;
    *) break ;;
  esac
done
server="${1:?SERVER_BIN}"; model="${2:?MODEL}"; shift 2
[[ "${1:-}" == "--" ]] && shift
extra=("$@")
label="${label:-$server}"
load="${TASKCAST_LOAD_BIN:-target/release/taskcast-load}"
export ORT_DYLIB_PATH="${ORT_DYLIB_PATH:-$PWD/.ort/libonnxruntime.so}" TASKCAST_LOG="${TASKCAST_LOG:-warn}"

port=$((20000 + RANDOM % 20000))
if [[ "$server" == null ]]; then
  "$load" --serve-null "127.0.0.1:$port" 2>/dev/null &
else
  "$server" --listen "127.0.0.1:$port" --metrics-listen "" --model "$model" "${extra[@]}" >/dev/null 2>&1 &
fi
pid=$!
trap 'kill $pid 2>/dev/null; wait $pid 2>/dev/null || true' EXIT
for _ in $(seq 100); do
  "$load" --target "http://127.0.0.1:$port" --duration 0.05 --warmup 0 --json >/dev/null 2>&1 && break
  sleep 0.1
done

cpu() { awk '{print $14 + $15}' "/proc/$pid/stat"; }
rss() { awk '/VmRSS/ {print $2}' "/proc/$pid/status"; }

cases=(
  "c1|--concurrency 1 --connections 1 --candidates 1"
  "t1|--concurrency 32 --connections 4 --candidates 1 --threads 1"
  "t100|--concurrency 32 --connections 4 --candidates 100 --threads 1"
)
printf '| %-10s | %-4s | %3s | %9s | %11s | %8s | %8s | %8s | %11s | %7s | %8s |\n' \
  build case run "calls/s" "scores/s" "p50 µs" "p99 µs" "p99.9 µs" "server µs CPU/call" "load CPU" "RSS MiB"
for c in "${cases[@]}"; do
  name="${c%%|*}"; flags="${c#*|}"
  [[ ",$only," == *",$name,"* ]] || continue
  for r in $(seq "$runs"); do
    before=$(cpu)
    # shellcheck disable=SC2086
    json=$("$load" --target "http://127.0.0.1:$port" --duration "$duration" --warmup 1 $flags --json)
    after=$(cpu)
    python3 - "$label" "$name" "$r" "$before" "$after" "$(rss)" "$duration" <<EOF
import json, sys
label, name, run, before, after, rss, duration = sys.argv[1:]
r = json.loads('''$json''')
calls = r["requests_ok"] + r["errors_total"]
# Server CPU over warm-up + measured span, per call made in that span (ticks are 10 ms).
span = float(duration) + r["warmup_s"]
per_call = (float(after) - float(before)) * 10_000.0 / max(1.0, r["throughput_rps"] * span)
print(f"| {label:<10} | {name:<4} | {run:>3} | {r['throughput_rps']:9.0f} | {r['scores_per_s']:11.0f} | "
      f"{r['latency_us']['p50']:8.0f} | {r['latency_us']['p99']:8.0f} | {r['latency_us']['p999']:8.0f} | "
      f"{per_call:11.1f} | {r['client_cpu_percent'] or 0:6.0f} % | {int(rss)/1024:8.1f} |"
      + (f" errors {r['errors']}" if r['errors_total'] else ""))
EOF
  done
done
