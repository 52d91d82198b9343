# syntax=docker/dockerfile:1
# Images of the service (see README "Deploy"):
#   docker build --target api        -t talkingface-api .          HTTP API tier, CPU
#   docker build --target worker     -t talkingface-worker .       one worker for one NVIDIA GPU
#   docker build --target worker-cpu -t talkingface-worker-cpu .   one worker on the CPU
# The GPU worker's CUDA: `nvidia-smi` shows the newest CUDA the host's driver runs. Pick a
# TORCH_CUDA tag that PyTorch publishes for TORCH_VERSION (https://download.pytorch.org/whl/,
# e.g. cu126, cu128) not newer than that, and a CUDA_IMAGE of the same CUDA version:
#   docker build --target worker --build-arg TORCH_CUDA=cu126 \
#       --build-arg CUDA_IMAGE=nvidia/cuda:12.6.3-runtime-ubuntu22.04 -t talkingface-worker .
# Model weights are never baked in: mount them at /weights (TALKINGFACE_WEIGHTS_DIR).

ARG PYTHON_IMAGE=python:3.11.14-slim-bookworm
ARG CUDA_IMAGE=nvidia/cuda:12.8.1-runtime-ubuntu22.04

# --- the project's wheel ---------------------------------------------------------------
FROM ${PYTHON_IMAGE} AS builder
WORKDIR /src
COPY pyproject.toml README.md ./
COPY models ./models
COPY service ./service
# A requirements file naming the wheel exactly, with the extras the images need (PostgreSQL, Celery, S3).
RUN pip wheel --no-cache-dir --no-deps --wheel-dir /dist . \
    && for wheel in /dist/talkingface-*.whl; do echo "/tmp/dist/${wheel##*/}[postgres,celery,s3]"; done > /dist/requirements.txt

# --- CPU runtime: the API and CPU workers ------------------------------------------------
FROM ${PYTHON_IMAGE} AS cpu
ARG TORCH_VERSION=2.13.0
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
# Unpinned Debian packages on purpose: the pinned base image fixes the release, and its
# security updates should land at each build.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends ffmpeg \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 --user-group --create-home talkingface \
    && mkdir -p /data /weights \
    && chown talkingface:talkingface /data /weights
ENV VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    TALKINGFACE_DATA_DIR=/data \
    TALKINGFACE_WEIGHTS_DIR=/weights
# The CPU build of PyTorch first, so that the package's "torch>=2.1" is already met.
RUN python -m venv /opt/venv \
    && pip install --no-cache-dir --index-url https://download.pytorch.org/whl/cpu "torch==${TORCH_VERSION}"
COPY --from=builder /dist /tmp/dist
RUN pip install --no-cache-dir --requirement /tmp/dist/requirements.txt \
    && rm -rf /tmp/dist
# The demo weights and examples live beside the packages (models/registry.py: DEMO_WEIGHTS),
# outside the wheel; they are small and part of the project.
COPY weights/demo /opt/venv/lib/python3.11/site-packages/weights/demo
COPY examples /opt/venv/lib/python3.11/site-packages/examples
VOLUME ["/data", "/weights"]
WORKDIR /home/talkingface
USER 10001:10001

FROM cpu AS api
ENV TALKINGFACE_HOST=0.0.0.0 \
    TALKINGFACE_PORT=8000
EXPOSE 8000
HEALTHCHECK --interval=15s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/livez' % os.environ.get('TALKINGFACE_PORT', '8000'), timeout=4)"]
ENTRYPOINT ["talkingface"]
CMD ["serve", "--workers", "0"]

FROM cpu AS worker-cpu
ENV TALKINGFACE_DEVICE=cpu
ENTRYPOINT ["talkingface"]
CMD ["worker"]

# --- GPU worker: NVIDIA CUDA runtime, Ubuntu's Python 3.11 --------------------------------
FROM ${CUDA_IMAGE} AS worker
ARG TORCH_VERSION=2.13.0
ARG TORCH_CUDA=cu128
ARG DEBIAN_FRONTEND=noninteractive
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3.11 python3.11-venv ffmpeg \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 --user-group --create-home talkingface \
    && mkdir -p /data /weights \
    && chown talkingface:talkingface /data /weights
ENV VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    TALKINGFACE_DATA_DIR=/data \
    TALKINGFACE_WEIGHTS_DIR=/weights \
    TALKINGFACE_DEVICE=cuda:0
RUN python3.11 -m venv /opt/venv \
    && pip install --no-cache-dir --index-url "https://download.pytorch.org/whl/${TORCH_CUDA}" "torch==${TORCH_VERSION}"
COPY --from=builder /dist /tmp/dist
RUN pip install --no-cache-dir --requirement /tmp/dist/requirements.txt \
    && rm -rf /tmp/dist
COPY weights/demo /opt/venv/lib/python3.11/site-packages/weights/demo
COPY examples /opt/venv/lib/python3.11/site-packages/examples
VOLUME ["/data", "/weights"]
WORKDIR /home/talkingface
USER 10001:10001
ENTRYPOINT ["talkingface"]
CMD ["worker"]
