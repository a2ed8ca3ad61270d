# syntax=docker/dockerfile:1
# jouletrace's diffusion server (torch, diffusers), non-root.
#
#   docker build -f deploy/docker/diffusion.Dockerfile -t ghcr.io/jouletrace/jouletrace-diffusion:0.1.0 .
#
# Build context: the repository root. The torch wheel from PyPI bundles its CUDA runtime;
# the driver comes from the node (NVIDIA container runtime).
# BASE: any image with Python 3.11 and its venv module (see sidecar.Dockerfile).
ARG BASE=python:3.11-slim

FROM ${BASE}
# A CA bundle for pip where TLS is intercepted (mounted into the build, e.g. /etc/ssl/certs).
ARG PIP_CERT
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 \
    HOME=/tmp HF_HOME=/cache/huggingface PATH=/opt/jouletrace/bin:$PATH
WORKDIR /src
COPY pyproject.toml README.m[d] ./
# the server needs only the stdlib contracts (span attribute names), not the sidecar itself
COPY sidecar/__init__.py ./sidecar/
COPY sidecar/contracts ./sidecar/contracts
COPY servers ./servers
RUN python3 -m venv /opt/jouletrace && pip install ".[diffusion]" && rm -rf /src \
 && install -d -o 65532 -g 65532 /cache
USER 65532:65532
WORKDIR /tmp
EXPOSE 8000
# Arguments (--model, --port, --otlp-endpoint) come from the Helm chart.
ENTRYPOINT ["python", "-m", "servers.diffusion"]
