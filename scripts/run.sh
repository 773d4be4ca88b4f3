#!/usr/bin/env bash
# Brings the whole system up on one machine, on the embedded SQLite default:
#   scripts/run.sh [--data FILE.csv[.gz]] [--fresh]
# 1. installs ONNX Runtime (scripts/setup-ort.sh) and builds both services (release);
# 2. if the database (.run/taskcast.db) is empty, imports FILE, or by default
#    simulated learners (trainer-svc simulate);
# 3. starts trainer-svc, which trains, gates and promotes a model, then
#    inference-svc subscribed to it, and waits until inference serves it;
# 4. prints how to call Predict and Train, and runs until Ctrl-C.
set -euo pipefail
cd "$(dirname "$0")/.."

DATA=""
FRESH=0
while (($#)); do
  case "$1" in
    --data) DATA=$2; shift 2 ;;
    --fresh) FRESH=1; shift ;;
    -h|--help) sed -n '2,9p' "$0"; exit 0 ;;
    *) echo "unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
done

INFERENCE_ADDR=${TASKCAST_INFERENCE_LISTEN:-127.0.0.1:50051}
TRAINER_ADDR=${TASKCAST_TRAINER_LISTEN:-127.0.0.1:50052}
RUN=.run
mkdir -p "$RUN"
((FRESH)) && rm -f "$RUN"/taskcast.db*
DB_URL="sqlite://$PWD/$RUN/taskcast.db?mode=rwc"

scripts/setup-system.sh
scripts/setup-ort.sh
# The example Python client's venv (.venv), as the README's calls use it.
scripts/setup-python.sh
export ORT_DYLIB_PATH="$PWD/.ort/libonnxruntime.so"
echo "== building (release; the first build takes a few minutes)"
cargo build --release --quiet -p trainer-svc -p inference-svc -p taskcast-client
BIN=${CARGO_TARGET_DIR:-target}/release

# One random secret per role (admin, replica, reader) and the key of the
# learner pseudonyms, kept across restarts; readable by this user only.
for secret in admin-token replica-token reader-token pseudonym-key; do
  if [[ ! -s $RUN/$secret ]]; then
    (umask 077; head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n' > "$RUN/$secret")
  fi
done

if [[ ! -s $RUN/taskcast.db ]]; then
  if [[ -z $DATA ]]; then
    echo "== empty database: importing simulated learners"
    DATA=$RUN/simulated.csv
    "$BIN/trainer-svc" simulate --learners 300 --attempts 80 --seed 42 --out "$DATA"
  else
    echo "== empty database: importing $DATA"
  fi
  "$BIN/trainer-svc" import --database-url "$DB_URL" --data "$DATA"
fi

pids=()
cleanup() { for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; }
trap cleanup EXIT INT TERM

"$BIN/trainer-svc" serve --database-url "$DB_URL" --listen "$TRAINER_ADDR" \
  --metrics-listen 127.0.0.1:9102 --admin-token-file "$RUN/admin-token" \
  --replica-token-file "$RUN/replica-token" --reader-token-file "$RUN/reader-token" \
  --pseudonym-key-file "$RUN/pseudonym-key" >"$RUN/trainer.log" 2>&1 &
pids+=($!)
"$BIN/inference-svc" --listen "$INFERENCE_ADDR" --metrics-listen 127.0.0.1:9101 \
  --model models/bootstrap.onnx --trainer "http://$TRAINER_ADDR" \
  --trainer-token-file "$RUN/replica-token" >"$RUN/inference.log" 2>&1 &
pids+=($!)

echo "== waiting for the trained model (logs: $RUN/trainer.log, $RUN/inference.log)"
"$BIN/taskcast-client" --inference "http://$INFERENCE_ADDR" wait --trained --wait-timeout 600

cat <<MSG

Taskcast is up:
  inference  grpc://$INFERENCE_ADDR   metrics http://127.0.0.1:9101/metrics
  trainer    grpc://$TRAINER_ADDR   metrics http://127.0.0.1:9102/metrics

Predict (Rust example client; the Python one is examples/python/client.py):
  $BIN/taskcast-client --inference http://$INFERENCE_ADDR predict --user learner-0001 \\
      --candidate t1:fractions:easy --candidate t2:algebra:hard --explain
Train now (admin; token in $RUN/admin-token):
  $BIN/taskcast-client --trainer http://$TRAINER_ADDR train --admin-token-file $RUN/admin-token

Ctrl-C stops both services.
MSG
wait -n "${pids[@]}"
