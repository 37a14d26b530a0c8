# syntax=docker/dockerfile:1
#
# vocos-serve: Vocos vocoder HTTP service. Runs on an NVIDIA GPU when the container gets one
# (docker run --gpus all / the compose GPU profile / nvidia.com/gpu on Kubernetes) and on the CPU
# otherwise (VOCOS_DEVICE=auto).
#
#   docker build -t vocos-serve .
#   docker build -t vocos-serve:cpu --build-arg PIP_EXTRA_INDEX_URL=https://download.pytorch.org/whl/cpu .
#   docker build -t vocos-serve:baked --build-arg BAKE_MODELS=1 .      # weights inside, for air-gapped sites
#   docker run --gpus all -p 8000:8000 -v vocos-cache:/var/cache/vocos --stop-timeout 45 vocos-serve
#
# The server drains on SIGTERM for up to VOCOS_DRAIN_TIMEOUT_S (30 s) before it exits. Docker's
# default stop timeout is 10 s and a Dockerfile cannot change it, so give `docker stop -t 45` /
# `docker run --stop-timeout 45`; docker-compose.yml sets stop_grace_period and the Kubernetes
# Deployment terminationGracePeriodSeconds to match.

ARG PYTHON_IMAGE=python:3.11.13-slim-bookworm
# The full image of the same Python and Debian release: it has the C compiler that builds
# vocos_core's bf16x3 matmul kernels (setup.py); the runtime stays slim.
ARG BUILDER_IMAGE=python:3.11.13-bookworm

# ---- builder: resolve pinned dependencies into a venv and install the project's wheel into it ----
FROM ${BUILDER_IMAGE} AS builder

# Set to https://download.pytorch.org/whl/cpu for a CPU-only image (pip reads it from the environment).
ARG PIP_EXTRA_INDEX_URL
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PATH=/opt/venv/bin:$PATH

RUN python -m venv /opt/venv
WORKDIR /src

# Dependencies first: this layer is reused until the pins change, not on every source edit.
COPY deploy/docker/requirements.txt deploy/docker/constraints-cuda.txt /tmp/
RUN pip install --no-cache-dir --requirement /tmp/requirements.txt --constraint /tmp/constraints-cuda.txt

COPY pyproject.toml setup.py README.md ./
COPY vocos_core ./vocos_core
COPY service ./service
# The pins above must satisfy pyproject.toml: --no-deps installs nothing unpinned and pip check proves it.
# --no-build-isolation: build with the pinned setuptools above, not whatever is newest.
RUN pip wheel --no-cache-dir --no-deps --no-build-isolation --wheel-dir /wheels . \
    && pip install --no-cache-dir --no-deps /wheels/vocos_serve-*.whl \
    && pip check
# The bf16x3 kernels (vocos_core._bf16x3) link the compiler's OpenMP runtime, libgomp.so.1, which the slim
# runtime image lacks (torch bundles its own under another name): without it the module fails to import and
# AMX CPUs lose their fastest matmuls with no error. Staged from the compiler that linked them.
RUN mkdir -p /opt/runtime-libs && cp -L "$(gcc -print-file-name=libgomp.so.1)" /opt/runtime-libs/

# ---- runtime: the venv, a non-root user, and nothing that built it ----
FROM ${PYTHON_IMAGE} AS runtime

# 1 = download the models of the image's default settings (the official ones) into its cache at build time
# (air-gapped sites); the build passes no VOCOS_* setting to that step.
ARG BAKE_MODELS=0
ARG VOCOS_UID=10001

LABEL org.opencontainers.image.title="vocos-serve" \
      org.opencontainers.image.description="Vocos neural vocoder HTTP service (mel / EnCodec features to 24 kHz audio)" \
      org.opencontainers.image.licenses="MIT"

# Model weights live under /var/cache/vocos, a volume in compose and a PersistentVolumeClaim on
# Kubernetes, so replicas and restarts share one download.
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    HF_HOME=/var/cache/vocos/huggingface \
    TORCH_HOME=/var/cache/vocos/torch \
    VOCOS_HOST=0.0.0.0 \
    VOCOS_PORT=8000 \
    VOCOS_DEVICE=auto \
    VOCOS_DRAIN_TIMEOUT_S=30

RUN groupadd --system --gid "${VOCOS_UID}" vocos \
    && useradd --system --uid "${VOCOS_UID}" --gid vocos --home-dir /home/vocos --create-home \
       --shell /usr/sbin/nologin vocos \
    && mkdir -p /var/cache/vocos /opt/vocos \
    && chown "${VOCOS_UID}:${VOCOS_UID}" /var/cache/vocos

COPY --from=builder /opt/venv /opt/venv
COPY --from=builder /opt/runtime-libs/ /usr/local/lib/
COPY deploy/docker/prefetch_models.py /opt/vocos/prefetch_models.py

# Fail the build, not the first AMX matmul, when a compiled module of the project misses a shared library.
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
RUN ldconfig \
    && ! find /opt/venv -path '*/vocos_core/*.so' -exec ldd {} + | grep 'not found'

USER ${VOCOS_UID}:${VOCOS_UID}
WORKDIR /home/vocos

RUN if [ "${BAKE_MODELS}" = "1" ]; then python /opt/vocos/prefetch_models.py; fi

EXPOSE 8000
STOPSIGNAL SIGTERM
# Liveness only (readiness is /readyz); the start period covers a first model download. An empty VOCOS_PORT
# is unset for the server (8000), so `or`, not a default of get().
HEALTHCHECK --interval=15s --timeout=5s --start-period=600s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:' + (os.environ.get('VOCOS_PORT') or '8000') + '/healthz', timeout=4)"]

ENTRYPOINT ["vocos-serve"]
