"""Starting a listener: a tap that cannot bind says where, why, and which knob moves it."""

from __future__ import annotations

from sidecar.config import SidecarConfig, env_name, flag_name
from sidecar.errors import StartupError
from sidecar.taps.tap import Tap

__all__ = ["cannot_listen", "start_tap"]


def start_tap(tap: Tap, config: SidecarConfig) -> None:
    """``tap.start()``; an ``OSError`` becomes a :class:`StartupError` naming the knob."""
    try:
        tap.start()
    except OSError as err:
        if not tap.knob:
            raise StartupError(f"{type(tap).__name__} could not start: {err}") from err
        raise StartupError(cannot_listen(config, tap.knob, err)) from err


def cannot_listen(config: SidecarConfig, knob: str, err: OSError) -> str:
    """One line: the address, the cause, and the knob (flag and environment variable) that moves it."""
    port = getattr(config, knob)  # every knob is a SidecarConfig field of the same name
    host = getattr(config, knob.removesuffix("port") + "host")  # port -> host, otlp_port -> otlp_host, ...
    flag, env = flag_name(knob), env_name(knob)
    cause = err.strerror or str(err)
    return f"cannot listen on {host}:{port} ({flag}): {cause}; choose a free port with {flag} or {env}"
