# inference-svc image from binaries built on the host: the runtime stage of
# inference.Dockerfile, instruction for instruction apart from where the files come from
# (deploy/tests/test_dockerfiles.py checks that). For machines without a
# registry or a Docker engine; no RUN step, so `podman build` needs no runtime.
# The context is a staging folder (deploy/build-images.sh makes it):
#   bin/inference-svc  lib/libonnxruntime.so  models/bootstrap.onnx
#
#   deploy/build-images.sh          # or by hand:
#   podman build -f deploy/docker/inference.runtime.Dockerfile \
#     --build-arg RUNTIME_IMAGE=localhost/taskcast-base:bookworm -t taskcast/inference-svc:dev STAGE

# Pin by digest (@sha256:...) in the release pipeline for reproducible images.
ARG RUNTIME_IMAGE=gcr.io/distroless/cc-debian12:nonroot

FROM --platform=linux/amd64 ${RUNTIME_IMAGE}
COPY bin/inference-svc /usr/local/bin/inference-svc
COPY lib/libonnxruntime.so /opt/onnxruntime/libonnxruntime.so
COPY models/bootstrap.onnx /models/bootstrap.onnx
USER 65532:65532
EXPOSE 50051 9101
ENV TASKCAST_LOG=info \
    TASKCAST_LOG_FORMAT=json
ENTRYPOINT ["/usr/local/bin/inference-svc"]
CMD ["--listen", "0.0.0.0:50051", "--metrics-listen", "0.0.0.0:9101", \
     "--model", "/models/bootstrap.onnx", "--trainer", "http://trainer:50052", \
     "--ort-lib", "/opt/onnxruntime/libonnxruntime.so"]
