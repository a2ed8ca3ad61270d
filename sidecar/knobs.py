"""The knob table: every setting of the sidecar, its type, default and one line of help (with units).

One name per knob across flag, environment and Helm (:mod:`sidecar.config` loads them):
``poll_interval_s`` is ``--poll-interval-s``, ``JOULETRACE_POLL_INTERVAL_S`` and the Helm value
``sidecar.config.poll_interval_s``. The chart's values schema is generated from this table
(``dashboards/generate.py``); :class:`~sidecar.config.SidecarConfig` has one field per knob, in
the same order, with the same default (checked at import).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from sidecar.contracts.ports import HOOK_PORT, HTTP_PORT, OTLP_PORT, PLUGIN_PORT, PROXY_PORT, PROXY_WIRE_PORT

__all__ = [
    "KNOBS",
    "METERS",
    "POLL_SCHEDULES",
    "SPLITS",
    "STEP_WEIGHTS",
    "Knob",
    "default",
    "http_url",
    "knob_named",
]

METERS = ("nvml", "rapl", "cpu-model", "replay", "sim")
SPLITS = ("fitted", "tokens", "output-tokens", "equal")
POLL_SCHEDULES = ("phase-lock", "fixed")
STEP_WEIGHTS = ("duration", "tokens")


@dataclass(frozen=True, slots=True)
class Knob:
    """One configuration knob: its name, type, default and one line of help (with units)."""

    name: str
    cast: Callable[[str], Any]
    default: Any
    help: str
    choices: tuple[str, ...] | None = None


def _finite(value: Any, text: str) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError(f"must be a finite number, got {text!r}")
    return value


def _at_most(value: Any, most: float | None, text: str) -> Any:
    if most is not None and value > most:
        raise ValueError(f"must be <= {most:g}, got {text!r}")
    return value


def _positive(
    cast: Callable[[str], Any], most: float | None = None, least: float | None = None
) -> Callable[[str], Any]:
    """``least``: a floor above 0 (a period of 1e-9 s was taken and spun a core)."""

    def parse(text: str) -> Any:
        value = _finite(cast(text), text)
        if value <= 0:
            raise ValueError(f"must be > 0, got {text!r}")
        if least is not None and value < least:
            raise ValueError(f"must be >= {least:g}, got {text!r}")
        return _at_most(value, most, text)

    parse.__name__ = f"positive {cast.__name__}"
    setattr(parse, "maximum", most)  # noqa: B010  # the chart's values schema reads it
    setattr(parse, "minimum", least)  # noqa: B010
    return parse


def _non_negative(cast: Callable[[str], Any], most: float | None = None) -> Callable[[str], Any]:
    def parse(text: str) -> Any:
        value = _finite(cast(text), text)
        if value < 0:
            raise ValueError(f"must be >= 0, got {text!r}")
        return _at_most(value, most, text)

    parse.__name__ = f"non-negative {cast.__name__}"
    setattr(parse, "maximum", most)  # noqa: B010  # the chart's values schema reads it
    return parse


# Upper bounds: a value past them was accepted and then failed later (a timer's or a protobuf
# Duration's range, gRPC's 32-bit message limit, an array allocated up front), with a traceback.
_YEAR_S = 365 * 86400.0  # any time knob (threading and asyncio take far more; a year is no setting)
_seconds = _positive(float, _YEAR_S)
_period = _positive(float, _YEAR_S, least=0.001)  # a loop's period: under 1 ms it spins a core
_seconds_or_0 = _non_negative(float, _YEAR_S)
_MAX_MESSAGE_BYTES = 512 << 20  # gRPC takes twice the limit as a C int
_MAX_TIMELINE = 1 << 22  # 4M samples: ~100 MB a device, up front


def _endpoint(text: str) -> str:
    """``host:port`` of an OTLP/gRPC endpoint (``grpc://`` or ``http://`` before it allowed; an IPv6
    host in brackets), or '' for none: checked here, not first by the exporter's warnings."""
    if not text:
        return text
    rest = text.removeprefix("grpc://").removeprefix("http://")
    host, sep, port = rest.rpartition(":")
    if not sep or not port.isdigit() or not 1 <= int(port) <= 65535:
        raise ValueError(f"must be host:port with a port 1..65535, got {text[:80]!r}")
    bare = host.removeprefix("[").removesuffix("]") if host.startswith("[") else host
    if not bare or len(bare) > 253 or ("[" in host) != host.startswith("[") or any(c in bare for c in "/[] "):
        raise ValueError(f"must be host:port with a host name or address, got {text[:80]!r}")
    if ":" in bare and not host.startswith("["):
        raise ValueError(f"an IPv6 host goes in brackets ([::1]:4317), got {text[:80]!r}")
    return text


def http_url(text: str) -> str:
    """An ``http(s)://host[:port]/path`` URL, or '' for none (ValueError otherwise): ``vllm_metrics_url``
    checked at load, not first by every scrape failing (counted as a malformed page, as though the
    server had sent one); ``proxy_sidecar_url`` checked by the proxy process."""
    if not text:
        return text
    parts = urlsplit(text)
    try:
        parts.port  # noqa: B018  # a port that is not a number or out of range raises
    except ValueError as err:
        raise ValueError(f"must be an http(s)://host[:port]/path URL, got {text[:80]!r}: {err}") from err
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"must be an http(s)://host[:port]/path URL, got {text[:80]!r}")
    return text


def _timeline_capacity(text: str) -> int:
    value = int(text)
    if not 3 <= value <= _MAX_TIMELINE:  # readiness needs three counter updates kept
        raise ValueError(f"must be 3..{_MAX_TIMELINE}, got {text!r}")
    return value


_timeline_capacity.minimum, _timeline_capacity.maximum = 3, _MAX_TIMELINE  # type: ignore[attr-defined]


def _percent(text: str) -> float:
    value = _finite(float(text), text)
    if not 0 <= value <= 100:
        raise ValueError(f"must be a percentage 0..100, got {text!r}")
    return float(value)


def _port(text: str) -> int:
    value = int(text)
    if not 0 <= value <= 65535:
        raise ValueError(f"must be a port 0..65535, got {text!r}")
    return value


KNOBS: tuple[Knob, ...] = (
    Knob("meter", str, "nvml", "energy source", METERS),
    Knob("devices", str, "all", "devices to read: 'all' or comma-separated GPU indices / UUIDs"),
    Knob("split", str, "fitted", "how a tick's energy is split among the requests in it", SPLITS),
    Knob("model", str, "unknown", "model name for work without one (and the idle series)"),
    Knob("host", str, "127.0.0.1", "address the HTTP server (/metrics, API, probes) binds (only it)"),
    Knob(
        "port",
        _port,
        HTTP_PORT,
        "port of the HTTP API: /metrics, /v1/requests/{id}, /v1/energy, /v1/prices, /healthz, /readyz",
    ),
    Knob("otlp_host", str, "127.0.0.1", "address the OTLP/gRPC trace receiver binds"),
    Knob("otlp_port", _port, OTLP_PORT, "port of the OTLP/gRPC trace receiver (0: no receiver)"),
    Knob(
        "otlp_max_message_bytes",
        _positive(int, _MAX_MESSAGE_BYTES),
        4 * 1024 * 1024,
        "largest OTLP export accepted, bytes",
    ),
    Knob(
        "otlp_max_queued_spans",
        _positive(int),
        10_000,
        "spans received and not yet handled (a few hundred bytes each, as columns); beyond: refused, counted",
    ),
    Knob(
        "otlp_drain_max_spans",
        _positive(int),
        2048,
        "queued spans a tick hands to attribution at most (whole exports; the rest waits for the next)",
    ),
    Knob(
        "otlp_dedupe_spans",
        _positive(int),
        20_000,
        "recent (trace id, span id) pairs kept to refuse an exporter's retries (as hashes: 24-40 B each)",
    ),
    Knob(
        "otlp_memory_limit_mb",
        _non_negative(float),
        400.0,
        "resident MB over which OTLP exports are refused, retryable (UNAVAILABLE); 0: no limit",
    ),
    Knob(
        "otlp_memory_limit_percent",
        _percent,
        80.0,
        "the same limit as a percentage of the container's memory limit (cgroup), where one is set; "
        "the lower of the two applies; 0: not from the container",
    ),
    Knob(
        "otlp_backlog_limit_rows",
        _non_negative(int),
        400_000,
        "work rows waiting to be split over which OTLP exports are refused, retryable (below "
        "max_pending_rows, where work is dropped for good; also while requests in flight exceed 90 % "
        "of max_requests); 0: no limit",
    ),
    Knob("otlp_retry_delay_s", _seconds, 1.0, "retry delay a refused OTLP exporter is told (s)"),
    Knob("plugin_host", str, "127.0.0.1", "address the vLLM plugin's UDP receiver binds"),
    Knob("plugin_port", _port, PLUGIN_PORT, "UDP port for the vLLM stat-logger plugin's iterations (0: off)"),
    Knob("hook_host", str, "127.0.0.1", "address the vLLM scheduler hook's UDP receiver binds"),
    Knob("hook_port", _port, HOOK_PORT, "UDP port for the vLLM scheduler hook's per-step members (0: off)"),
    Knob(
        "vllm_task_wait_s",
        _seconds,
        30.0,
        "seconds a vLLM request span waits for its trace's client span (the task); then 'unknown'",
    ),
    Knob(
        "vllm_metrics_url", http_url, "", "vLLM's /metrics URL, e.g. http://localhost:8000/metrics ('' off)"
    ),
    Knob("vllm_metrics_interval_s", _period, 1.0, "seconds between scrapes of vLLM's /metrics"),
    Knob(
        "otlp_forward_endpoint",
        _endpoint,
        "",
        "host:port of an OTLP/gRPC endpoint for energy-annotated spans",
    ),
    Knob("poll_interval_s", _period, 0.02, "seconds between energy-counter reads"),
    Knob(
        "poll_schedule",
        str,
        "phase-lock",
        "phase-lock: read each GPU just after its counter's predicted update (NVML); fixed: every poll",
        POLL_SCHEDULES,
    ),
    Knob("status_interval_s", _period, 0.5, "seconds between power/utilization/clock reads"),
    Knob("tick_interval_s", _period, 0.1, "seconds between attribution passes"),
    Knob("settle_s", _seconds_or_0, 2.0, "seconds a tick waits for late work before it is sealed"),
    Knob(
        "diffusion_max_batch_s",
        _seconds_or_0,
        900.0,
        "seconds a diffusion pipeline call begun is waited for before its time is sealed (0: never)",
    ),
    Knob("fit_window_ticks", _positive(int), 600, "ticks of history the fitted energy model uses"),
    Knob("fit_warmup_ticks", _positive(int), 50, "busy ticks the fitted model sees before it splits"),
    Knob(
        "fit_max_condition",
        _positive(float),
        1000.0,
        "fit windows above this condition number hold the last good fit",
    ),
    Knob(
        "fit_step_weight",
        str,
        "duration",
        "duration: a hook step's work weighs its measured over its predicted duration; tokens: not",
        STEP_WEIGHTS,
    ),
    Knob(
        "floor_w",
        _non_negative(float),
        0.0,
        "idle power floor of the devices in W; 0: measure it from idle ticks",
    ),
    Knob(
        "floor_stale_s",
        _seconds,
        3600.0,
        "seconds without an idle tick after which the floor is stale",
    ),
    Knob("fit_warmup_max_s", _seconds, 30.0, "seconds busy ticks wait for the fit, then fallback"),
    Knob("request_timeout_s", _seconds, 600.0, "seconds without work after which a request ends"),
    Knob("max_requests", _positive(int), 50_000, "requests in flight; beyond it the oldest ends (counted)"),
    Knob(
        "max_model_labels",
        _positive(int),
        64,
        "model names the energy totals and per-request series keep (first seen); more: 'other', counted",
    ),
    Knob("max_pending_rows", _positive(int), 500_000, "work rows awaiting their tick; beyond: refused"),
    Knob("max_future_s", _seconds, 300.0, "work or ends claimed this far ahead are refused (s)"),
    Knob("shutdown_grace_s", _seconds, 10.0, "seconds SIGTERM may take to seal and flush"),
    Knob("timeline_capacity", _timeline_capacity, 65536, "energy samples kept per device (ring buffer)"),
    Knob("ledger_path", str, "jouletrace-ledger.db", "SQLite ledger of finished requests; '' keeps none"),
    Knob("ledger_max_rows", _positive(int), 1_000_000, "requests kept in the ledger"),
    Knob("ledger_max_age_s", _seconds, 7 * 86400.0, "seconds a ledger record is kept"),
    Knob(
        "ledger_write_every_s",
        _non_negative(float, 60.0),  # a record waiting is not in the metrics yet, and a kill -9 loses it
        1.0,
        "seconds final records wait in memory to be written to the ledger together and counted; 0: each tick",
    ),
    Knob("replay_path", str, "", "CSV trace for --meter replay"),
    Knob("replay_speed", _positive(float), 1.0, "replay speed factor for --meter replay"),
    Knob("cpu_idle_w", _non_negative(float), 10.0, "cpu-model estimate: watts at 0 % CPU"),
    Knob("cpu_max_w", _positive(float), 65.0, "cpu-model estimate: watts at 100 % CPU"),
    Knob("sim_requests", _positive(int), 200, "--meter sim: requests in the simulated workload"),
    Knob("sim_seed", _non_negative(int, 2**32 - 1), 0, "--meter sim: random seed of the simulated workload"),
    Knob(
        "proxy_upstream",
        str,
        "",
        "OpenAI-compatible server the proxy forwards to, e.g. http://localhost:8000 ('' off)",
    ),
    Knob("proxy_host", str, "127.0.0.1", "address the OpenAI proxy binds"),
    Knob("proxy_port", _port, PROXY_PORT, "port of the OpenAI proxy (when proxy_upstream is set)"),
    Knob("proxy_tenant_header", str, "", "request header naming the tenant ('' : the OpenAI 'user' field)"),
    Knob(
        "proxy_max_body_bytes",
        _positive(int),
        8 << 20,
        "largest request body the proxy accepts (bytes; more: 413)",
    ),
    Knob(
        "proxy_sidecar_url",
        str,
        "",
        "jouletrace proxy: the sidecar's API (prices from /v1/prices; record URLs point at it); "
        "'': http://127.0.0.1:<port>, the port knob's",
    ),
    Knob("proxy_wire_host", str, "127.0.0.1", "address the receiver of the proxy process's timings binds"),
    Knob(
        "proxy_wire_port",
        _port,
        PROXY_WIRE_PORT,
        "UDP port of the proxy process's per-request timings: the sidecar listens, the proxy sends (0: off)",
    ),
    Knob("tenant_top_n", _positive(int), 10, "tenants with their own series; the rest are 'other'"),
    Knob("log_level", str, "info", "logging level", ("debug", "info", "warning", "error")),
)


def knob_named(name: str) -> Knob:
    """The knob called ``name``; KeyError if none."""
    for k in KNOBS:
        if k.name == name:
            return k
    raise KeyError(f"no knob called {name!r}")


def default(name: str) -> Any:
    """The default of the knob called ``name`` (for code that needs it without a config); KeyError if none."""
    return knob_named(name).default
