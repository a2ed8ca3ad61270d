"""One typed config: every knob has one name across flag, environment and Helm.

A knob ``poll_interval_s`` is the flag ``--poll-interval-s``, the environment
variable ``JOULETRACE_POLL_INTERVAL_S`` and the Helm value
``sidecar.config.poll_interval_s``. Precedence: flag > environment > default.
Every error names the knob and where its bad value came from. The knobs themselves (type,
default, help) are the table in :mod:`sidecar.knobs`.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields
from typing import Any

from sidecar.contracts.ports import HOOK_PORT, HTTP_PORT, OTLP_PORT, PLUGIN_PORT, PROXY_PORT, PROXY_WIRE_PORT
from sidecar.errors import ConfigError
from sidecar.knobs import KNOBS, METERS, POLL_SCHEDULES, SPLITS, Knob, knob_named

__all__ = [
    "KNOBS",
    "METERS",
    "POLL_SCHEDULES",
    "SPLITS",
    "Knob",
    "SidecarConfig",
    "add_arguments",
    "env_name",
    "flag_name",
    "load_config",
]


@dataclass(frozen=True, slots=True)
class SidecarConfig:
    """The sidecar's settings; see :data:`KNOBS` for units and meaning."""

    meter: str = "nvml"
    devices: str = "all"
    split: str = "fitted"
    model: str = "unknown"
    host: str = "127.0.0.1"
    port: int = HTTP_PORT
    otlp_host: str = "127.0.0.1"
    otlp_port: int = OTLP_PORT
    otlp_max_message_bytes: int = 4 * 1024 * 1024
    otlp_max_queued_spans: int = 10_000
    otlp_drain_max_spans: int = 2048
    otlp_dedupe_spans: int = 20_000
    otlp_memory_limit_mb: float = 400.0
    otlp_memory_limit_percent: float = 80.0
    otlp_backlog_limit_rows: int = 400_000
    otlp_retry_delay_s: float = 1.0
    plugin_host: str = "127.0.0.1"
    plugin_port: int = PLUGIN_PORT
    hook_host: str = "127.0.0.1"
    hook_port: int = HOOK_PORT
    vllm_task_wait_s: float = 30.0
    vllm_metrics_url: str = ""
    vllm_metrics_interval_s: float = 1.0
    otlp_forward_endpoint: str = ""
    poll_interval_s: float = 0.02
    poll_schedule: str = "phase-lock"
    status_interval_s: float = 0.5
    tick_interval_s: float = 0.1
    settle_s: float = 2.0
    diffusion_max_batch_s: float = 900.0
    fit_window_ticks: int = 600
    fit_warmup_ticks: int = 50
    fit_max_condition: float = 1000.0
    fit_step_weight: str = "duration"
    floor_w: float = 0.0
    floor_stale_s: float = 3600.0
    fit_warmup_max_s: float = 30.0
    request_timeout_s: float = 600.0
    max_requests: int = 50_000
    max_model_labels: int = 64
    max_pending_rows: int = 500_000
    max_future_s: float = 300.0
    shutdown_grace_s: float = 10.0
    timeline_capacity: int = 65536
    ledger_path: str = "jouletrace-ledger.db"
    ledger_max_rows: int = 1_000_000
    ledger_max_age_s: float = 7 * 86400.0
    ledger_write_every_s: float = 1.0
    replay_path: str = ""
    replay_speed: float = 1.0
    cpu_idle_w: float = 10.0
    cpu_max_w: float = 65.0
    sim_requests: int = 200
    sim_seed: int = 0
    proxy_upstream: str = ""
    proxy_host: str = "127.0.0.1"
    proxy_port: int = PROXY_PORT
    proxy_tenant_header: str = ""
    proxy_max_body_bytes: int = 8 << 20
    proxy_sidecar_url: str = ""  # "": http://127.0.0.1:<port>
    proxy_wire_host: str = "127.0.0.1"
    proxy_wire_port: int = PROXY_WIRE_PORT
    tenant_top_n: int = 10
    log_level: str = "info"

    def device_list(self) -> list[str] | None:
        """``None`` for all devices, else the ids in order."""
        if self.devices.strip().lower() in ("", "all"):
            return None
        return [d.strip() for d in self.devices.split(",") if d.strip()]


def flag_name(knob: str) -> str:
    """``poll_interval_s`` -> ``--poll-interval-s``."""
    return "--" + knob.replace("_", "-")


def env_name(knob: str) -> str:
    """``poll_interval_s`` -> ``JOULETRACE_POLL_INTERVAL_S``."""
    return "JOULETRACE_" + knob.upper()


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add one flag per knob; values stay strings so errors are ours and name the knob."""
    for knob in KNOBS:
        extra = f" (one of: {', '.join(knob.choices)})" if knob.choices else ""
        parser.add_argument(
            flag_name(knob.name),
            dest=knob.name,
            default=None,
            metavar=knob.name.upper(),
            help=f"{knob.help}{extra}; env {env_name(knob.name)}; default {knob.default!r}".replace(
                "%", "%%"
            ),
        )


def _parse(knob: Knob, raw: str, origin: str) -> Any:
    try:
        value = knob.cast(raw)
    except (TypeError, ValueError) as err:
        raise ConfigError(f"{knob.name}: bad value {raw!r} from {origin}: {err}") from err
    if knob.choices is not None and value not in knob.choices:
        raise ConfigError(f"{knob.name}: {raw!r} from {origin} is not one of {', '.join(knob.choices)}")
    return value


def from_env(name: str, environ: Mapping[str, str] | None = None) -> Any:
    """Knob ``name`` as ``JOULETRACE_<NAME>`` sets it, checked as the sidecar checks it, else its
    default: for a command beside the sidecar that shares the knob (``jouletrace vllm serve``'s
    plugin and hook ports). A bad value is a :class:`ConfigError` naming the variable."""
    env = os.environ if environ is None else environ
    shared = knob_named(name)
    raw = env.get(env_name(name))
    return shared.default if raw is None else _parse(shared, raw, env_name(name))


def load_config(
    args: argparse.Namespace | Mapping[str, Any] | None = None,
    environ: Mapping[str, str] | None = None,
) -> SidecarConfig:
    """Build the config from parsed flags (or a mapping) over the environment over defaults."""
    env = os.environ if environ is None else environ
    given: Mapping[str, Any] = vars(args) if isinstance(args, argparse.Namespace) else (args or {})
    unknown = set(given) - {k.name for k in KNOBS} - _NON_KNOB_ARGS
    if unknown:
        raise ConfigError(f"unknown config knob(s): {', '.join(sorted(unknown))}")
    values: dict[str, Any] = {}
    for knob in KNOBS:
        flag_value = given.get(knob.name)
        if flag_value is not None:
            values[knob.name] = _parse(knob, str(flag_value), flag_name(knob.name))
        elif env_name(knob.name) in env:
            values[knob.name] = _parse(knob, env[env_name(knob.name)], env_name(knob.name))
    config = SidecarConfig(**values)
    if config.cpu_max_w < config.cpu_idle_w:
        raise ConfigError(f"cpu_max_w ({config.cpu_max_w}) is below cpu_idle_w ({config.cpu_idle_w})")
    if config.meter == "replay" and not config.replay_path:
        raise ConfigError(
            "replay_path: --meter replay needs a trace file (--replay-path or JOULETRACE_REPLAY_PATH)"
        )
    return config


# argparse keys that are not knobs (subcommand plumbing).
_NON_KNOB_ARGS = {"command", "func"}


def _check_knobs_match_fields(knobs: Sequence[Knob]) -> None:
    names = [k.name for k in knobs]
    field_names = [f.name for f in fields(SidecarConfig)]
    if names != field_names:
        raise AssertionError(f"KNOBS and SidecarConfig fields differ: {names} vs {field_names}")
    for knob, fld in zip(knobs, fields(SidecarConfig), strict=True):
        if knob.default != fld.default:
            raise AssertionError(f"default of {knob.name} differs: {knob.default!r} vs {fld.default!r}")


_check_knobs_match_fields(KNOBS)
