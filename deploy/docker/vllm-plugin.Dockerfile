# syntax=docker/dockerfile:1
# Upstream vLLM plus the jouletrace stat-logger plugin (entry point group
# vllm.stat_logger_plugins): one thin layer, vLLM's own packages untouched (--no-deps).
#
#   docker build -f deploy/docker/vllm-plugin.Dockerfile \
#     --build-arg VLLM_VERSION=v0.11.0 -t ghcr.io/jouletrace/vllm-openai-jouletrace:0.1.0 .
#
# Build context: the repository root. The entrypoint stays upstream's (`vllm serve`).

# BASE: upstream's image (a mirror of it where the registry is out of reach).
ARG VLLM_VERSION=v0.11.0
ARG BASE=vllm/vllm-openai:${VLLM_VERSION}
FROM ${BASE}
COPY pyproject.toml README.m[d] /opt/jouletrace/
# the plugin needs only the stdlib contracts (sidecar/contracts), not the sidecar itself
COPY sidecar/__init__.py /opt/jouletrace/sidecar/
COPY sidecar/contracts /opt/jouletrace/sidecar/contracts
COPY servers /opt/jouletrace/servers
# vLLM's image installs with uv; --no-deps keeps its torch and friends exactly as shipped.
RUN uv pip install --system --no-deps /opt/jouletrace \
 && python3 -c "from importlib.metadata import entry_points; \
import sys; eps = entry_points(group='vllm.stat_logger_plugins'); \
print('jouletrace vLLM plugins:', [e.name for e in eps]); sys.exit(0 if eps else 1)"
