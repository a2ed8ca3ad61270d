# syntax=docker/dockerfile:1
# The jouletrace sidecar: slim Python, no torch, non-root, read-only-root-FS friendly.
#
#   docker build -f deploy/docker/sidecar.Dockerfile -t ghcr.io/jouletrace/jouletrace-sidecar:0.1.0 .
#
# Build context: the repository root. NVML comes from the node's driver, mounted by the
# NVIDIA container runtime (NVIDIA_VISIBLE_DEVICES, NVIDIA_DRIVER_CAPABILITIES=utility).

FROM python:3.11-slim AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
COPY pyproject.toml README.m[d] ./
COPY sidecar ./sidecar
RUN pip wheel --wheel-dir /wheels ".[sidecar]"

FROM python:3.11-slim
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 \
    HOME=/tmp
RUN --mount=type=bind,from=build,source=/wheels,target=/wheels \
    pip install --no-index --find-links=/wheels "jouletrace[sidecar]" \
 && if pip show torch >/dev/null 2>&1; then echo "torch must not be in the sidecar image" >&2; exit 1; fi \
 && install -d -o 65532 -g 65532 /var/lib/jouletrace /run/jouletrace
# /bin/sh, cat, ls and paste (coreutils) stay: the chart's GPU probe and sidecar start use them.
USER 65532:65532
WORKDIR /var/lib/jouletrace
ENV JOULETRACE_LEDGER_PATH=/var/lib/jouletrace/ledger.db
EXPOSE 9464 4317
ENTRYPOINT ["jouletrace"]
CMD ["sidecar"]
