"""The launcher: vLLM's command line and environment, and the CPU build's version workaround."""

from __future__ import annotations

import argparse
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from servers.vllm.cli import _launcher_flags, add_arguments
from servers.vllm.launcher import (
    REPO,
    SCHEDULER_HOOK,
    VLLM_CLI,
    Process,
    free_port,
    serve_command,
    serve_env,
    vllm_python,
)


def test_serve_points_tracing_at_the_sidecar_echoes_request_ids_and_passes_vllm_args_through() -> None:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    args = parser.parse_args(["serve", "/m", "--port", "8011", "--dtype", "float32", "--plugin-port", "7000"])
    flags, rest = _launcher_flags(args.rest)
    assert (flags.port, flags.plugin_port, rest) == (8011, 7000, ["--dtype", "float32"])
    cmd = serve_command("/m", port=flags.port, otlp_endpoint=flags.sidecar_otlp, extra=rest)
    assert cmd[1:4] == [str(VLLM_CLI), "serve", "/m"] and cmd[-2:] == ["--dtype", "float32"]
    assert "--enable-request-id-headers" in cmd
    assert cmd[cmd.index("--otlp-traces-endpoint") + 1] == "localhost:4317"
    assert "--otlp-traces-endpoint" not in serve_command("/m", otlp_endpoint=None)


def test_the_environment_brings_spans_in_quickly_and_names_the_plugin_port() -> None:
    env = serve_env(plugin_port=7000, base={"VLLM_CPU_KVCACHE_SPACE": "4"})
    assert env["JOULETRACE_PLUGIN_PORT"] == "7000" and env["OTEL_BSP_SCHEDULE_DELAY"] == "100"
    assert env["VLLM_CPU_KVCACHE_SPACE"] == "4"  # a user's setting wins
    assert serve_env(base={})["VLLM_CPU_KVCACHE_SPACE"] == "1"


def test_the_scheduler_hook_is_on_by_default_and_yields_to_a_flag_or_another_scheduler() -> None:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    flags, rest = _launcher_flags(parser.parse_args(["serve", "/m", "--hook-port", "7001"]).rest)
    cmd = serve_command("/m", scheduler_hook=flags.scheduler_hook, extra=rest)
    assert cmd[cmd.index("--scheduler-cls") + 1] == SCHEDULER_HOOK and flags.hook_port == 7001
    off, rest = _launcher_flags(parser.parse_args(["serve", "/m", "--no-scheduler-hook"]).rest)
    assert "--scheduler-cls" not in serve_command("/m", scheduler_hook=off.scheduler_hook, extra=rest)
    mine = serve_command("/m", extra=["--scheduler-cls=my.Scheduler"])
    assert [a for a in mine if a.startswith("--scheduler-cls")] == ["--scheduler-cls=my.Scheduler"]


def test_vllm_loads_the_hook_from_this_checkout_and_sends_to_the_hook_port() -> None:
    env = serve_env(hook_port=7001, base={"PYTHONPATH": "/x"})
    assert env["JOULETRACE_HOOK_PORT"] == "7001" and env["JOULETRACE_HOOK_HOST"] == "127.0.0.1"
    assert env["PYTHONPATH"].split(":") == [str(REPO), "/x"]


@pytest.mark.integration
def test_the_wrapper_answers_vllms_version_lookup_in_the_cpu_build() -> None:
    if not vllm_python().exists():
        pytest.fail("run scripts/setup-vllm-venv.sh .venv-vllm")
    probe = (
        f"import runpy, importlib.metadata as m; runpy.run_path({str(VLLM_CLI)!r}); print(m.version('vllm'))"
    )
    out = subprocess.run(
        [str(vllm_python()), "-c", probe], capture_output=True, text=True, timeout=60, check=True
    )
    assert out.stdout.strip().startswith("0.32.0")


@pytest.mark.parametrize("variable", ["JOULETRACE_PLUGIN_PORT", "JOULETRACE_HOOK_PORT"])
def test_a_bad_port_in_the_environment_is_one_line_naming_it_not_a_traceback(
    variable: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Probe 12: ``jouletrace vllm serve`` read these with a bare ``int()`` (a ValueError traceback);
    they are the sidecar's knobs of the same names, checked as it checks them."""
    from sidecar.cli import main

    monkeypatch.setenv(variable, "abc")
    assert main(["vllm", "serve", "/no-such-model"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("jouletrace: ") and f"bad value 'abc' from {variable}" in err, err
    assert "Traceback" not in err and len(err.splitlines()) == 1
    monkeypatch.setenv(variable, "70000")  # out of range: refused as the sidecar refuses it
    assert main(["vllm", "serve", "/no-such-model"]) == 2
    assert "must be a port 0..65535" in capsys.readouterr().err
    monkeypatch.setenv(variable, "9471")
    flags, _ = _launcher_flags([])
    assert (flags.plugin_port if "PLUGIN" in variable else flags.hook_port) == 9471


def test_the_launcher_sends_spans_to_the_otlp_port_of_the_environment_and_help_names_its_flags(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Probe 12: ``--sidecar-otlp`` stayed localhost:4317 where JOULETRACE_OTLP_PORT moved the sidecar
    (the plugin and hook ports followed theirs), and ``vllm serve --help`` named no launcher flag."""
    from sidecar.cli import main

    monkeypatch.setenv("JOULETRACE_OTLP_PORT", "14317")
    assert _launcher_flags([])[0].sidecar_otlp == "localhost:14317"
    monkeypatch.setenv("JOULETRACE_OTLP_PORT", "0")  # the sidecar's receiver off: no spans sent
    assert _launcher_flags([])[0].sidecar_otlp == ""
    assert _launcher_flags(["--sidecar-otlp", "s:1"])[0].sidecar_otlp == "s:1"
    with pytest.raises(SystemExit):
        main(["vllm", "serve", "--help"])
    shown = capsys.readouterr().out
    for flag in ("--host", "--port", "--sidecar-otlp", "--plugin-port", "--hook-port", "--no-scheduler-hook"):
        assert flag in shown


def test_a_process_that_ignores_sigterm_is_killed_after_the_wait(tmp_path: Path) -> None:
    ignores = "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
    ignores += "print('up', flush=True); time.sleep(60)"
    proc = Process("stubborn", [sys.executable, "-c", ignores], tmp_path / "stubborn.log")
    deadline = time.monotonic() + 10
    while "up" not in proc.log_path.read_text() and time.monotonic() < deadline:
        time.sleep(0.02)  # the handler is in place once it has printed
    assert proc.stop(timeout_s=0.5) == -signal.SIGKILL
    assert proc.tail() == "up"


def test_free_port_never_hands_out_a_port_twice_though_the_system_offers_it_again(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    offered = iter([40001, 40001, 40002, 40001, 40002, 40003])

    class OneSocket:  # the system offers a port just let go again, as Linux may
        def __init__(self, *_: object) -> None:
            self.port = next(offered)

        def __enter__(self) -> OneSocket:
            return self

        def __exit__(self, *_: object) -> None:
            return None

        def bind(self, _: object) -> None:
            return None

        def getsockname(self) -> tuple[str, int]:
            return ("127.0.0.1", self.port)

    monkeypatch.setattr(socket, "socket", OneSocket)
    monkeypatch.setattr("servers.ports._ISSUED", set())
    assert [free_port(), free_port(), free_port()] == [40001, 40002, 40003]
