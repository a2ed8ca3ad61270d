"""Default ports, written once (the Helm chart's values.yaml repeats them), and hosts in URLs."""

from __future__ import annotations

__all__ = [
    "HOOK_PORT",
    "HTTP_PORT",
    "LLM_SERVER_PORT",
    "OTLP_PORT",
    "PLUGIN_PORT",
    "PROXY_PORT",
    "PROXY_WIRE_PORT",
    "url_host",
]

HTTP_PORT = 9464  # the sidecar's /metrics, /v1/requests/{id}, /healthz, /readyz (TCP)
OTLP_PORT = 4317  # the sidecar's OTLP/gRPC trace receiver (TCP; the OTLP standard port)
PLUGIN_PORT = 9466  # the sidecar's vLLM stat-logger plugin datagrams (UDP)
HOOK_PORT = 9467  # the sidecar's vLLM scheduler-hook datagrams (UDP)
LLM_SERVER_PORT = 8000  # the OpenAI-compatible server (vLLM, the diffusion server)
PROXY_PORT = 8001  # the sidecar's OpenAI-compatible proxy (TCP), in front of the server on LLM_SERVER_PORT
PROXY_WIRE_PORT = 9468  # the sidecar's receiver of the separate proxy process's per-request timings (UDP)


def url_host(host: str) -> str:
    """``host`` as it goes in a URL: an IPv6 address in brackets (``::1`` -> ``[::1]``), others as given."""
    return f"[{host}]" if ":" in host and not host.startswith("[") else host
