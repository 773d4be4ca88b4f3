# syntax=docker/dockerfile:1.7
# trainer-svc image, built from source. Build from the repository root:
#
#   docker build -f deploy/docker/trainer.Dockerfile -t taskcast/trainer-svc:dev .
#
# Needs BuildKit (cache mounts; it also reads trainer.Dockerfile.dockerignore
# beside this file). linux/amd64 only (the ONNX Runtime wheel, as for inference).
# Base images are build arguments; trainer.runtime.Dockerfile is the same
# runtime stage around host-built binaries (see inference.Dockerfile).

ARG RUST_VERSION=1.95
ARG RUST_IMAGE=rust:${RUST_VERSION}-bookworm
ARG PYTHON_IMAGE=python:3.11-slim-bookworm
# Pin by digest (@sha256:...) in the release pipeline for reproducible images.
ARG RUNTIME_IMAGE=gcr.io/distroless/cc-debian12:nonroot

# --- build --------------------------------------------------------------------
FROM --platform=linux/amd64 ${RUST_IMAGE} AS build
WORKDIR /src
COPY . .
# protoc is vendored; SQLite is compiled in by sqlx and Postgres is spoken
# natively, so no system libraries are needed at build or run time.
RUN --mount=type=cache,target=/usr/local/cargo/registry,sharing=locked \
    --mount=type=cache,target=/usr/local/cargo/git,sharing=locked \
    --mount=type=cache,target=/src/target,id=taskcast-target,sharing=locked \
    cargo build --release --locked -p trainer-svc \
 && install -D -m 0755 target/release/trainer-svc /out/trainer-svc \
 && install -d -m 0755 /out/data

# --- ort: libonnxruntime.so 1.31.1 from the PyPI wheel, sha256-checked --------
# `trainer-svc serve` loads it at startup (each exported model is run through
# ONNX Runtime before the gate) and exits without it.
FROM --platform=linux/amd64 ${PYTHON_IMAGE} AS ort
WORKDIR /src
COPY scripts/setup-ort.sh scripts/setup-ort.sh
RUN bash scripts/setup-ort.sh \
 && install -D -m 0644 .ort/libonnxruntime.so /out/libonnxruntime.so

# --- runtime: glibc + libgcc + libstdc++ + CA certs, no shell ------------------
FROM --platform=linux/amd64 ${RUNTIME_IMAGE}
COPY --from=build /out/trainer-svc /usr/local/bin/trainer-svc
COPY --from=ort /out/libonnxruntime.so /opt/onnxruntime/libonnxruntime.so
# /data is only used with SQLite (dev); owned by the runtime user so a plain
# `docker run -v taskcast-data:/data` volume starts out writable.
COPY --from=build --chown=65532:65532 /out/data /data
USER 65532:65532
# gRPC (Trainer, grpc.health.v1, reflection) and Prometheus /metrics + /healthz.
EXPOSE 50052 9102
ENV TASKCAST_LOG=info \
    TASKCAST_LOG_FORMAT=json
ENTRYPOINT ["/usr/local/bin/trainer-svc"]
# Defaults for `docker run`: a SQLite file on the /data volume. The Kubernetes
# manifests pass their own args and take the database URL from the environment.
CMD ["serve", "--listen", "0.0.0.0:50052", "--metrics-listen", "0.0.0.0:9102", \
     "--ort-lib", "/opt/onnxruntime/libonnxruntime.so", \
     "--database-url", "sqlite:///data/taskcast.db?mode=rwc"]
