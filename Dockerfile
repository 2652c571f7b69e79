# Switchyard: build the release binary, then a slim runtime image with the binary, the ONNX
# Runtime library and the default registry. No Docker engine runs in our CI; `hadolint` checks
# this file there.
#   docker build -t switchyard .                      CPU image (the default target, last below)
#   docker build --target cuda -t switchyard:cuda .   NVIDIA GPU image: CUDA 13 + cuDNN 9 runtime and
#                                                     the onnxruntime-gpu build of the same ONNX Runtime

FROM rust:1.95-bookworm AS build
# build.rs fetches libonnxruntime from the onnxruntime==1.31.1 PyPI wheel with `python3 -m pip download`.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3-pip \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY Cargo.toml Cargo.lock build.rs ./
COPY proto proto
COPY src src
COPY loadtest loadtest
COPY benches benches
RUN cargo build --release --locked --bin switchyard \
    && test -f target/onnxruntime-1.31.1/libonnxruntime.so.1.31.1

# The CUDA build of ONNX Runtime 1.31.1: its libraries from the onnxruntime-gpu wheel (built for
# CUDA 13 and cuDNN 9), fetched through pip like the CPU one.
FROM build AS ort-gpu
RUN python3 -m pip download --no-deps --only-binary=:all: --dest /tmp/wheel onnxruntime-gpu==1.31.1 \
    && python3 -m zipfile -e /tmp/wheel/onnxruntime_gpu-1.31.1-*.whl /tmp/ort \
    && mkdir -p /ort \
    && cp /tmp/ort/onnxruntime/capi/libonnxruntime.so.1.31.1 \
          /tmp/ort/onnxruntime/capi/libonnxruntime_providers_shared.so \
          /tmp/ort/onnxruntime/capi/libonnxruntime_providers_cuda.so /ort/ \
    && rm -rf /tmp/wheel /tmp/ort

# GPU runtime: the same binary and registry; device = "cuda" by default. ONNX Runtime finds its
# CUDA provider beside libonnxruntime; the image supplies the CUDA and cuDNN libraries it loads.
FROM nvidia/cuda:13.0.1-cudnn-runtime-ubuntu24.04 AS cuda
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates curl \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 --no-create-home --shell /usr/sbin/nologin switchyard
COPY --from=build /src/target/release/switchyard /usr/local/bin/switchyard
COPY --from=ort-gpu /ort/ /usr/local/lib/onnxruntime/
COPY models /models
ENV SWITCHYARD_MODEL_REPOSITORY=/models \
    ORT_DYLIB_PATH=/usr/local/lib/onnxruntime/libonnxruntime.so.1.31.1 \
    SWITCHYARD_DEVICE=cuda \
    NVIDIA_TF32_OVERRIDE=0 \
    SWITCHYARD_LOG_FORMAT=json
USER 10001
EXPOSE 8000 8001
HEALTHCHECK --interval=10s --timeout=3s --start-period=60s --retries=3 \
    CMD ["/bin/sh", "-c", "curl -fsS http://127.0.0.1:${SWITCHYARD_HTTP_PORT:-8000}/v2/health/ready || exit 1"]
ENTRYPOINT ["switchyard"]
CMD ["serve"]

# The default target (last): CPU only.
FROM debian:bookworm-slim AS cpu
# curl is for the HEALTHCHECK only.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates curl \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 --no-create-home --shell /usr/sbin/nologin switchyard
COPY --from=build /src/target/release/switchyard /usr/local/bin/switchyard
# Found beside the binary's ../lib without configuration; ORT_DYLIB_PATH makes it explicit.
COPY --from=build /src/target/onnxruntime-1.31.1/libonnxruntime.so.1.31.1 /usr/local/lib/
COPY models /models
ENV SWITCHYARD_MODEL_REPOSITORY=/models \
    ORT_DYLIB_PATH=/usr/local/lib/libonnxruntime.so.1.31.1 \
    SWITCHYARD_LOG_FORMAT=json
USER 10001
EXPOSE 8000 8001
HEALTHCHECK --interval=10s --timeout=3s --start-period=30s --retries=3 \
    CMD ["/bin/sh", "-c", "curl -fsS http://127.0.0.1:${SWITCHYARD_HTTP_PORT:-8000}/v2/health/ready || exit 1"]
ENTRYPOINT ["switchyard"]
CMD ["serve"]
