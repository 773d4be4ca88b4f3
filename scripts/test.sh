#!/usr/bin/env bash
# The project's one test command (README, CI): formatting, lints, the Rust
# workspace tests, then the Python tests (manifests, Dockerfiles, example client).
# Expects scripts/setup-ort.sh and scripts/setup-python.sh to have run (.ci/run does).
set -euo pipefail
cd "$(dirname "$0")/.."

echo "== cargo fmt"
cargo fmt --all -- --check
echo "== cargo clippy"
cargo clippy --workspace --all-targets -- -D warnings
echo "== rust tests"
if cargo nextest --version >/dev/null 2>&1; then
  cargo nextest run --workspace
else
  cargo test --workspace
fi

echo "== python tests"
if [[ ! -x .venv/bin/pytest ]]; then
  echo ".venv missing: run scripts/setup-python.sh" >&2
  exit 1
fi
rc=0
.venv/bin/pytest -q deploy/tests examples/python || rc=$?
# pytest exits 5 only when it collected no test at all (all-skipped is 0):
# that means the suites vanished, so say so instead of a bare "5".
if [[ $rc == 5 ]]; then
  echo "pytest collected no tests in deploy/tests or examples/python" >&2
fi
exit "$rc"
