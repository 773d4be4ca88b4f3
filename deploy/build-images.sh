#!/usr/bin/env bash
# Builds both images with podman from binaries built on the host, through the
# runtime-only Dockerfiles (deploy/docker/*.runtime.Dockerfile), on top of a
# base image that needs no registry (scripts/setup-podman.sh makes it):
#
#   cargo build --release -p inference-svc -p trainer-svc
#   deploy/build-images.sh [TAG]            # default tag: dev (the dev overlay's)
#
# Images are named docker.io/taskcast/<svc>:TAG: that is what the manifests'
# `taskcast/<svc>:TAG` means to a kubelet, so `podman save ... | kind load
# image-archive` gives the cluster exactly the names the overlay asks for.
#
# Environment:
#   TASKCAST_BIN_DIR   where the binaries are (default target/release)
#   RUNTIME_IMAGE      base image (default: the one setup-podman.sh makes;
#                      gcr.io/distroless/cc-debian12:nonroot where a registry is reachable)
#   TASKCAST_ORT_LIB   ONNX Runtime library (default .ort/libonnxruntime.so, from setup-ort.sh)
set -euo pipefail
cd "$(dirname "$0")/.."
export CONTAINERS_CONF=${CONTAINERS_CONF:-$PWD/deploy/podman/containers.conf}
TAG=${1:-dev}
BIN_DIR=${TASKCAST_BIN_DIR:-target/release}
ORT_LIB=${TASKCAST_ORT_LIB:-.ort/libonnxruntime.so}
RUNTIME_IMAGE=${RUNTIME_IMAGE:-$(scripts/setup-podman.sh)}

for f in "$BIN_DIR/inference-svc" "$BIN_DIR/trainer-svc" "$ORT_LIB" models/bootstrap.onnx; do
  [[ -f $f ]] || { echo "build-images: $f missing (cargo build, scripts/setup-ort.sh)" >&2; exit 1; }
done

stage=$(mktemp -d)
trap 'rm -rf "$stage"' EXIT
install -D -m 0755 "$BIN_DIR/inference-svc" "$stage/bin/inference-svc"
install -D -m 0755 "$BIN_DIR/trainer-svc" "$stage/bin/trainer-svc"
install -D -m 0644 "$ORT_LIB" "$stage/lib/libonnxruntime.so"
install -D -m 0644 models/bootstrap.onnx "$stage/models/bootstrap.onnx"
install -d -m 0755 "$stage/data"

for svc in inference trainer; do
  name=docker.io/taskcast/$svc-svc:$TAG
  podman build --quiet --runtime runc --pull=never \
    --build-arg "RUNTIME_IMAGE=$RUNTIME_IMAGE" \
    -f "deploy/docker/$svc.runtime.Dockerfile" -t "$name" "$stage" >/dev/null
  echo "$name"
done
