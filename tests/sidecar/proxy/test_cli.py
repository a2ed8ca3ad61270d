"""``jouletrace proxy``: the proxy in its own process; start-up errors name the knob."""

from __future__ import annotations

import pytest

from sidecar.cli import main


def test_proxy_without_an_upstream_names_the_knob(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("JOULETRACE_PROXY_UPSTREAM", raising=False)
    assert main(["proxy", "--meter", "sim"]) == 2
    assert "proxy_upstream" in capsys.readouterr().err


def test_a_bad_upstream_url_is_one_line_naming_the_knob(capsys: pytest.CaptureFixture[str]) -> None:
    args = [
        "proxy",
        "--upstream",
        "localhost:8000",
        "--meter",
        "sim",
        "--ledger-path",
        "",
        "--otlp-port",
        "0",
    ]
    assert main(args) == 2
    assert capsys.readouterr().err.startswith("jouletrace: proxy_upstream: 'localhost:8000'")


def test_upstream_is_the_short_spelling_of_proxy_upstream() -> None:
    import argparse

    from sidecar.proxy.cli import add_arguments

    parser = argparse.ArgumentParser()
    add_arguments(parser)
    assert parser.parse_args(["--upstream", "http://a:1"]).proxy_upstream == "http://a:1"
    assert parser.parse_args(["--proxy-upstream", "http://b:2"]).proxy_upstream == "http://b:2"
    assert parser.parse_args(["--sidecar", "http://s:3"]).proxy_sidecar_url == "http://s:3"
    assert parser.parse_args(["--proxy-sidecar-url", "http://s:4"]).proxy_sidecar_url == "http://s:4"


def test_a_taken_proxy_port_is_one_line_naming_the_knob(capsys: pytest.CaptureFixture[str]) -> None:
    import socket

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        args = ["proxy", "--upstream", "http://127.0.0.1:1", "--proxy-port", str(port)]
        assert main(args) == 2
    assert capsys.readouterr().err.startswith(
        f"jouletrace: proxy_port: cannot serve the proxy on 127.0.0.1:{port}"
    )


def test_the_sidecars_proxy_wire_port_in_use_exits_2_naming_the_knob(
    capsys: pytest.CaptureFixture[str],
) -> None:
    import socket

    from tests.support import free_port

    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as busy:
        busy.bind(("127.0.0.1", 0))
        port = busy.getsockname()[1]
        args = ["sidecar", "--meter", "cpu-model", "--host", "127.0.0.1", "--ledger-path", ""]
        args += ["--port", str(free_port()), "--otlp-port", "0", "--plugin-port", "0", "--hook-port", "0"]
        assert main([*args, "--proxy-wire-port", str(port)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"jouletrace: cannot listen on 127.0.0.1:{port} (--proxy-wire-port)")
    assert "JOULETRACE_PROXY_WIRE_PORT" in err
