# trainer-svc image from binaries built on the host: the runtime stage of
# trainer.Dockerfile apart from where the files come from (checked by
# deploy/tests/test_dockerfiles.py). The context is a staging folder
# (deploy/build-images.sh makes it):
#   bin/trainer-svc  lib/libonnxruntime.so  data/ (empty)

# Pin by digest (@sha256:...) in the release pipeline for reproducible images.
ARG RUNTIME_IMAGE=gcr.io/distroless/cc-debian12:nonroot

FROM --platform=linux/amd64 ${RUNTIME_IMAGE}
COPY bin/trainer-svc /usr/local/bin/trainer-svc
COPY lib/libonnxruntime.so /opt/onnxruntime/libonnxruntime.so
COPY --chown=65532:65532 data /data
USER 65532:65532
EXPOSE 50052 9102
ENV TASKCAST_LOG=info \
    TASKCAST_LOG_FORMAT=json
ENTRYPOINT ["/usr/local/bin/trainer-svc"]
CMD ["serve", "--listen", "0.0.0.0:50052", "--metrics-listen", "0.0.0.0:9102", \
     "--ort-lib", "/opt/onnxruntime/libonnxruntime.so", \
     "--database-url", "sqlite:///data/taskcast.db?mode=rwc"]
