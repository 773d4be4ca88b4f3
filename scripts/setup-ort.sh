#!/usr/bin/env bash
# Puts the ONNX Runtime shared library where `.cargo/config.toml` (ORT_DYLIB_PATH)
# and the services' --ort-lib default expect it: .ort/libonnxruntime.so.
# It comes from the PyPI wheel onnxruntime==1.31.1 (the ort crate's matching
# runtime; its own download step cannot reach its CDN here). Idempotent.
set -euo pipefail
cd "$(dirname "$0")/.."
VERSION=1.31.1
LIB_SHA256=fc44112fbe06d7d689c57e11d3862031f64711007e4ee020f8eed5185fd2c1d3
DEST=.ort/libonnxruntime.so

have_ok() { [[ -f $DEST ]] && echo "$LIB_SHA256  $DEST" | sha256sum -c --status; }
if have_ok; then echo "onnxruntime $VERSION already at $DEST"; exit 0; fi

mkdir -p .ort
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
PY=${PYTHON:-python3}
# Debian's python3 comes without pip; scripts/setup-system.sh installs it.
if ! "$PY" -m pip --version >/dev/null 2>&1; then
  "$(dirname "$0")"/setup-system.sh
fi
"$PY" -m pip download --quiet --no-deps --only-binary=:all: \
  --platform manylinux_2_28_x86_64 --python-version 3.11 \
  "onnxruntime==$VERSION" -d "$tmp"
"$PY" - "$tmp" "$DEST" "$VERSION" <<'PY'
import glob, sys, zipfile
tmp, dest, version = sys.argv[1:]
wheel = glob.glob(f"{tmp}/onnxruntime-{version}-*.whl")[0]
with zipfile.ZipFile(wheel) as z, open(dest, "wb") as out:
    out.write(z.read(f"onnxruntime/capi/libonnxruntime.so.{version}"))
PY
if ! have_ok; then echo "sha256 mismatch for $DEST" >&2; rm -f "$DEST"; exit 1; fi
echo "onnxruntime $VERSION installed at $DEST"
