# syntax=docker/dockerfile:1.7
# inference-svc image, built from source. Build from the repository root (the
# context must hold the whole Cargo workspace, proto/, scripts/ and models/):
#
#   docker build -f deploy/docker/inference.Dockerfile -t taskcast/inference-svc:dev .
#
# Needs BuildKit (cache mounts; it also reads inference.Dockerfile.dockerignore
# beside this file, which keeps target/, .venv/, .ort/ and .git/ out of the context).
# linux/amd64 only: scripts/setup-ort.sh fetches the manylinux x86_64 wheel and
# checks that library's sha256.
#
# The base images are build arguments, so a machine that cannot pull from a
# registry can point them at images it has (e.g. a debootstrapped Debian 12
# imported with `podman import`). Without any registry at all, use
# inference.runtime.Dockerfile: the same runtime stage around binaries built on
# the host (deploy/build-images.sh; deploy/tests/run_manifests.py builds and
# runs it). deploy/tests/test_dockerfiles.py keeps the two runtime stages equal.

ARG RUST_VERSION=1.95
ARG RUST_IMAGE=rust:${RUST_VERSION}-bookworm
ARG PYTHON_IMAGE=python:3.11-slim-bookworm
# Pin by digest (@sha256:...) in the release pipeline for reproducible images.
ARG RUNTIME_IMAGE=gcr.io/distroless/cc-debian12:nonroot

# --- build: the release binary, exactly the locked dependency set -------------
FROM --platform=linux/amd64 ${RUST_IMAGE} AS build
WORKDIR /src
COPY . .
# protoc is vendored (protoc-bin-vendored) and ort uses load-dynamic, so no
# system packages are needed. target/ lives in a cache mount, hence the copy-out.
RUN --mount=type=cache,target=/usr/local/cargo/registry,sharing=locked \
    --mount=type=cache,target=/usr/local/cargo/git,sharing=locked \
    --mount=type=cache,target=/src/target,id=taskcast-target,sharing=locked \
    cargo build --release --locked -p inference-svc \
 && install -D -m 0755 target/release/inference-svc /out/inference-svc

# --- ort: libonnxruntime.so 1.31.1 from the PyPI wheel, sha256-checked --------
# The same script developers run, so the image and `cargo test` use one library.
FROM --platform=linux/amd64 ${PYTHON_IMAGE} AS ort
WORKDIR /src
COPY scripts/setup-ort.sh scripts/setup-ort.sh
RUN bash scripts/setup-ort.sh \
 && install -D -m 0644 .ort/libonnxruntime.so /out/libonnxruntime.so

# --- runtime: glibc (ONNX Runtime needs glibc >= 2.28 and libstdc++), no shell -
# distroless/cc-debian12 = Debian 12 glibc + libgcc + libstdc++ + CA certs.
FROM --platform=linux/amd64 ${RUNTIME_IMAGE}
COPY --from=build /out/inference-svc /usr/local/bin/inference-svc
COPY --from=ort /out/libonnxruntime.so /opt/onnxruntime/libonnxruntime.so
# Fallback model served until the trainer streams the active one
# (regenerate with `cargo run -p taskcast-contract --example write_bootstrap`).
COPY models/bootstrap.onnx /models/bootstrap.onnx
# Numeric uid/gid so Kubernetes' runAsNonRoot can verify it without /etc/passwd.
USER 65532:65532
# gRPC (Inference, grpc.health.v1, reflection) and Prometheus /metrics + /healthz.
EXPOSE 50051 9101
ENV TASKCAST_LOG=info \
    TASKCAST_LOG_FORMAT=json
ENTRYPOINT ["/usr/local/bin/inference-svc"]
# Defaults for `docker run`; the Kubernetes manifests pass their own args.
CMD ["--listen", "0.0.0.0:50051", "--metrics-listen", "0.0.0.0:9101", \
     "--model", "/models/bootstrap.onnx", "--trainer", "http://trainer:50052", \
     "--ort-lib", "/opt/onnxruntime/libonnxruntime.so"]
