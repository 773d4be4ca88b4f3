#!/usr/bin/env bash
# The long run of the wire decoder's differential fuzzing against prost
# (inference-svc/src/wire/tests.rs, `fuzz_*`): the same properties the
# normal tests run briefly, with TASKCAST_FUZZ_CASES cases each. Prints the
# cases, the time and any finding (a failing case is shrunk and printed by
# proptest, and the script exits non-zero); RELIABILITY.md keeps the figures
# of the last long run.
#
#   scripts/fuzz-wire.sh               # 4 properties x 262 144 cases: >= 1 M
#   CASES=1000000 scripts/fuzz-wire.sh # per property
#
# Stable Rust and proptest's structured generators rather than cargo-fuzz:
# no nightly toolchain or libFuzzer build is needed, the generators build
# well-formed messages to damage (coverage-guided byte mutation rarely gets
# past the first length prefix), and the same harness runs in every
# `cargo test`.
set -euo pipefail
cd "$(dirname "$0")/.."
CASES=${CASES:-262144}
PROPERTIES=4
echo "fuzz-wire: $PROPERTIES properties x $CASES cases = $((PROPERTIES * CASES)) cases"
cargo test -p inference-svc --lib --no-run >/dev/null 2>&1 || cargo test -p inference-svc --lib --no-run
start=$(date +%s)
TASKCAST_FUZZ_CASES=$CASES cargo test -q -p inference-svc --lib wire::tests::fuzz_ -- --test-threads 2
end=$(date +%s)
cargo test -q -p inference-svc --lib wire::tests::fuzz_acceptance_rate -- --ignored --nocapture | grep '^structured'
echo "fuzz-wire: $((PROPERTIES * CASES)) cases in $((end - start)) s, no finding"
