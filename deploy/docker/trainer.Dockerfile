# syntax=docker/dockerfile:1.7
# trainer-svc image. Build from the repository root:
#
#   docker build -f deploy/docker/trainer.Dockerfile -t taskcast/trainer-svc:dev .
#
# Needs BuildKit (cache mounts; it also reads trainer.Dockerfile.dockerignore
# beside this file). Not built on the dev machine (no Docker engine there);
# deploy/tests/test_dockerfiles.py checks its static invariants.

ARG RUST_VERSION=1.95

# --- build --------------------------------------------------------------------
FROM rust:${RUST_VERSION}-bookworm AS build
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

# --- runtime: glibc + libgcc + libstdc++ + CA certs, no shell ------------------
# Pin by digest (@sha256:...) in the release pipeline for reproducible images.
FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /out/trainer-svc /usr/local/bin/trainer-svc
# /data is only used with SQLite (dev); owned by the runtime user so a plain
# `docker run -v taskcast-data:/data` volume starts out writable.
COPY --from=build --chown=65532:65532 /out/data /data
USER 65532:65532
# gRPC (Trainer, grpc.health.v1, reflection) and Prometheus /metrics.
EXPOSE 50052 9102
ENV TASKCAST_LOG=info \
    TASKCAST_LOG_FORMAT=json
ENTRYPOINT ["/usr/local/bin/trainer-svc"]
# Defaults for `docker run`: a SQLite file on the /data volume. The Kubernetes
# manifests pass their own args and take the database URL from the environment.
CMD ["serve", "--listen", "0.0.0.0:50052", "--metrics-listen", "0.0.0.0:9102", \
     "--database-url", "sqlite:///data/taskcast.db?mode=rwc"]
