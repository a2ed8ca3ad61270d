# syntax=docker/dockerfile:1
# The jouletrace sidecar: slim Python, no torch, non-root, read-only-root-FS friendly.
#
#   docker build -f deploy/docker/sidecar.Dockerfile -t ghcr.io/jouletrace/jouletrace-sidecar:0.1.0 .
#
# Build context: the repository root. NVML comes from the node's driver, mounted by the
# NVIDIA container runtime (NVIDIA_VISIBLE_DEVICES, NVIDIA_DRIVER_CAPABILITIES=utility).
# BASE: any image with Python 3.11 and its venv module (python3): python:3.11-slim by default;
# where no registry is reachable, scripts/build-base-image.sh makes one from Debian packages
# (tests/ops/test_images.py builds this file with it).
ARG BASE=python:3.11-slim

FROM ${BASE} AS build
# A CA bundle for pip where TLS is intercepted (mounted into the build, e.g. /etc/ssl/certs).
ARG PIP_CERT
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
# Dependencies first, read from pyproject.toml: their layer is rebuilt only when it changes.
COPY pyproject.toml ./
RUN python3 -m venv /opt/jouletrace \
 && python3 -c "import tomllib; p = tomllib.load(open('pyproject.toml', 'rb'))['project']; \
print('\n'.join(p['dependencies'] + p['optional-dependencies']['sidecar']))" > /tmp/requirements.txt \
 && /opt/jouletrace/bin/pip install -r /tmp/requirements.txt
COPY README.m[d] ./
COPY sidecar ./sidecar
RUN /opt/jouletrace/bin/pip install --no-deps . \
 && if /opt/jouletrace/bin/pip show torch >/dev/null 2>&1; then echo "torch must not be in the sidecar image" >&2; exit 1; fi

FROM ${BASE}
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 \
    HOME=/tmp PATH=/opt/jouletrace/bin:$PATH
COPY --from=build /opt/jouletrace /opt/jouletrace
RUN install -d -o 65532 -g 65532 /var/lib/jouletrace /run/jouletrace
# /bin/sh, cat, ls and paste (coreutils) stay: the chart's GPU probe and sidecar start use them.
USER 65532:65532
WORKDIR /var/lib/jouletrace
ENV JOULETRACE_LEDGER_PATH=/var/lib/jouletrace/ledger.db
EXPOSE 9464 4317
ENTRYPOINT ["jouletrace"]
CMD ["sidecar"]
