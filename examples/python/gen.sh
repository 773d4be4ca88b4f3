#!/usr/bin/env bash
# (Re)generates the Python gRPC code for taskcast.v1 from proto/ alone into the
# stub cache, ${TASKCAST_STUBS_DIR:-${XDG_CACHE_HOME:-~/.cache}/taskcast/python-stubs}/<key>
# (<key>: hash of the .proto files and tool versions; nothing is written to the
# source tree), and prints the folder. client.py does the same on first import
# when the folder is missing. Uses grpcio-tools' bundled protoc and its copy of
# the well-known types (google/protobuf/timestamp.proto).
#   examples/python/gen.sh            # with .venv/bin/python, else python3
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
PY=${PYTHON:-$ROOT/.venv/bin/python}
[[ -x $PY ]] || PY=python3
exec "$PY" "$HERE/client.py" --generate-only
