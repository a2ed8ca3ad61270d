"""Starting a listener: a tap that cannot bind says where, why, and which knob moves it."""

from __future__ import annotations

import errno

from sidecar.config import SidecarConfig, env_name, flag_name
from sidecar.errors import StartupError
from sidecar.taps.tap import Tap

__all__ = ["cannot_listen", "start_tap"]

# the port is at fault: taken, or below 1024 without the privilege; any other failure (a name that
# does not resolve, an address this machine does not have) is the address's
_PORT_FAULTS = frozenset({errno.EADDRINUSE, errno.EACCES})


def start_tap(tap: Tap, config: SidecarConfig) -> None:
    """``tap.start()``; an ``OSError`` becomes a :class:`StartupError` naming the knob."""
    try:
        tap.start()
    except OSError as err:
        if not tap.knob:
            raise StartupError(f"{type(tap).__name__} could not start: {err}") from err
        raise StartupError(cannot_listen(config, tap.knob, err)) from err


def cannot_listen(config: SidecarConfig, knob: str, err: OSError) -> str:
    """One line: the address, the cause, and the knob (flag and environment variable) that moves it:
    the port knob (``knob``) for a port in use, else the host knob beside it (``otlp_port`` ->
    ``otlp_host``)."""
    host_knob = knob.removesuffix("port") + "host"  # port -> host, otlp_port -> otlp_host, ...
    port, host = getattr(config, knob), getattr(config, host_knob)  # each knob is a config field
    cause = err.strerror or str(err)
    if err.errno in _PORT_FAULTS:
        flag, env = flag_name(knob), env_name(knob)
        return f"cannot listen on {host}:{port} ({flag}): {cause}; choose a free port with {flag} or {env}"
    flag, env = flag_name(host_knob), env_name(host_knob)
    return (
        f"cannot listen on {host}:{port} ({flag}): {cause}; "
        f"choose an address of this machine with {flag} or {env}"
    )
