"""Start-up failures: a port in use is one line naming the knob (flag, env var); nothing is left running.

Each test holds a real socket on a port, then starts the sidecar on it, in
process: ``jouletrace sidecar`` through :func:`sidecar.cli.main` (exit code 2
and the message), or :meth:`Sidecar.run` (what it stopped again).
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Iterator

import pytest

from sidecar.cli import main
from sidecar.config import SidecarConfig
from sidecar.errors import StartupError
from sidecar.wiring import build_sidecar
from tests.support import free_port


@pytest.fixture
def busy_tcp() -> Iterator[int]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        yield int(s.getsockname()[1])


@pytest.fixture
def busy_udp() -> Iterator[int]:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        yield int(s.getsockname()[1])


def _ports(**busy: int) -> list[str]:
    ports = {"port": free_port(), "otlp_port": 0, "plugin_port": 0, "hook_port": 0, **busy}
    return [arg for knob, port in ports.items() for arg in (f"--{knob.replace('_', '-')}", str(port))]


def _sidecar(*ports: str) -> list[str]:
    return ["sidecar", "--meter", "cpu-model", "--host", "127.0.0.1", "--ledger-path", "", *ports]


@pytest.mark.parametrize(
    ("knob", "flag", "env"),
    [
        ("port", "--port", "JOULETRACE_PORT"),
        ("otlp_port", "--otlp-port", "JOULETRACE_OTLP_PORT"),
    ],
)
def test_a_tcp_port_in_use_exits_2_with_one_line_naming_the_knob(
    busy_tcp: int, knob: str, flag: str, env: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(_sidecar(*_ports(**{knob: busy_tcp}))) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"jouletrace: cannot listen on 127.0.0.1:{busy_tcp} ({flag})")
    assert f"choose a free port with {flag} or {env}" in err
    assert "Traceback" not in err and len(err.splitlines()) == 1


def test_the_plugins_udp_port_in_use_exits_2_naming_plugin_port(
    busy_udp: int, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(_sidecar(*_ports(plugin_port=busy_udp))) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"jouletrace: cannot listen on 127.0.0.1:{busy_udp} (--plugin-port)")
    assert "Address already in use" in err and "JOULETRACE_PLUGIN_PORT" in err


def test_the_hooks_udp_port_in_use_exits_2_naming_hook_port(
    busy_udp: int, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(_sidecar(*_ports(hook_port=busy_udp))) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"jouletrace: cannot listen on 127.0.0.1:{busy_udp} (--hook-port)")
    assert "Address already in use" in err and "JOULETRACE_HOOK_PORT" in err


def test_a_failed_start_stops_what_had_started(busy_tcp: int) -> None:
    http_port = free_port()
    config = SidecarConfig(
        meter="cpu-model",
        host="127.0.0.1",
        port=http_port,
        otlp_port=busy_tcp,
        plugin_port=0,
        hook_port=0,
        ledger_path="",
    )
    sidecar = build_sidecar(config)
    try:
        with pytest.raises(StartupError, match="--otlp-port"):
            asyncio.run(sidecar.run(asyncio.Event()))
        assert sidecar.http_port == http_port  # the HTTP server had started ...
        assert not sidecar.poller.running  # ... and so had the poller: both are stopped again
        with socket.socket() as s:
            s.bind(("127.0.0.1", http_port))  # the HTTP port is free again
    finally:
        sidecar.close()


def test_a_sidecar_can_be_run_again_after_it_stopped() -> None:
    config = SidecarConfig(
        meter="cpu-model",
        host="127.0.0.1",
        port=0,
        otlp_port=0,
        plugin_port=0,
        hook_port=0,
        proxy_wire_port=0,
        ledger_path="",
    )
    sidecar = build_sidecar(config)

    async def run_briefly() -> None:
        stop = asyncio.Event()
        asyncio.get_running_loop().call_later(0.3, stop.set)
        await sidecar.run(stop)

    try:
        asyncio.run(run_briefly())
        polls = sidecar.timeline.polls
        asyncio.run(run_briefly())  # the poller thread starts afresh
        assert sidecar.timeline.polls > polls > 0 and not sidecar.poller.running
    finally:
        sidecar.close()


@pytest.mark.parametrize(
    ("host", "bad", "port_knob"),
    [
        ("host", "999.1.1.1", "port"),
        ("otlp_host", "no-such-host.invalid", "otlp_port"),
        ("hook_host", "10.255.255.1", "hook_port"),
    ],
)
def test_an_address_the_machine_lacks_exits_2_naming_the_host_knob_not_the_port(
    host: str, bad: str, port_knob: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """Probe 12: a bad --host (or --otlp-host, --hook-host ...) said "choose a free port"."""
    kind = socket.SOCK_DGRAM if port_knob == "hook_port" else socket.SOCK_STREAM
    flag, env = f"--{host.replace('_', '-')}", f"JOULETRACE_{host.upper()}"
    assert main(_sidecar(*_ports(**{port_knob: free_port(kind)}), flag, bad)) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"jouletrace: cannot listen on {bad}:") and f"({flag})" in err, err
    assert f"choose an address of this machine with {flag} or {env}" in err and "free port" not in err
    assert "Traceback" not in err and len(err.splitlines()) == 1
