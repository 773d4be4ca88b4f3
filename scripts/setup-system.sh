#!/usr/bin/env bash
# Installs the Debian packages scripts/run.sh and scripts/test.sh need beyond
# the Rust toolchain and python3, only when missing:
#   gcc, libc6-dev      rustc links through cc
#   python3-venv        scripts/setup-python.sh (.venv)
#   python3-pip         scripts/setup-ort.sh (`pip download` of the onnxruntime wheel)
#   iproute2            the manifest run test's network namespaces (ip, ss)
#   prometheus          promtool (the alerts' unit tests) and the Prometheus
#                       server the manifest run test starts (not as a service)
# As root with apt-get it installs them; otherwise it names what to install
# and fails. podman, runc and debootstrap come from scripts/setup-podman.sh.
set -euo pipefail
PY=${PYTHON:-python3}
missing=()
command -v cc >/dev/null || missing+=(gcc libc6-dev)
"$PY" -c 'import venv, ensurepip' 2>/dev/null || missing+=(python3-venv)
"$PY" -m pip --version >/dev/null 2>&1 || missing+=(python3-pip)
command -v ip >/dev/null && command -v ss >/dev/null || missing+=(iproute2)
command -v promtool >/dev/null && command -v prometheus >/dev/null || missing+=(prometheus)
((${#missing[@]})) || exit 0
if [[ $(id -u) != 0 ]] || ! command -v apt-get >/dev/null; then
  echo "missing: ${missing[*]} (Debian: sudo apt-get install ${missing[*]})" >&2
  exit 1
fi
echo "== apt-get install ${missing[*]}"
apt-get update -qq
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
