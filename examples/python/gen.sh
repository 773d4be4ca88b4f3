#!/usr/bin/env bash
# Generates the Python gRPC code for taskcast.v1 from proto/ alone into
# examples/python/gen/ (git-ignored; never committed). Uses grpcio-tools' bundled
# protoc and its copy of the well-known types (google/protobuf/timestamp.proto).
#   examples/python/gen.sh            # with .venv/bin/python, else python3
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
PY=${PYTHON:-$ROOT/.venv/bin/python}
[[ -x $PY ]] || PY=python3
exec "$PY" "$HERE/client.py" --generate-only
