"""The ``jouletrace`` command: bad config exits 2 naming the knob; --help lists every knob.

The integration tests start the real sidecar process (``python -m sidecar.cli
sidecar``) on the recorded H200 trace and on the simulated GPU, wait for
/readyz, scrape /metrics, and stop it with SIGTERM, as Kubernetes does.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from sidecar.cli import main
from sidecar.config import KNOBS, env_name, flag_name
from sidecar.meters.replay import ReplayMeter
from tests.support import free_port, wait_for

REPO = Path(__file__).resolve().parents[2]
H200_TRACE = REPO / "tests" / "data" / "nvml_h200_full.csv"
START_TIMEOUT_S = 20.0
STOP_TIMEOUT_S = 10.0


@pytest.fixture(autouse=True)
def no_jouletrace_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """The developer's own JOULETRACE_* settings must not leak into these tests."""
    for knob in KNOBS:
        monkeypatch.delenv(env_name(knob.name), raising=False)


# ---- bad configuration -----------------------------------------------------------------------


def test_an_unknown_meter_exits_2_with_a_message_naming_the_knob(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["sidecar", "--meter", "bogus"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("jouletrace: meter:")
    assert "'bogus'" in err and "--meter" in err
    assert "nvml" in err  # the valid choices are listed


def test_the_replay_meter_without_a_path_exits_2_naming_replay_path(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["sidecar", "--meter", "replay"]) == 2
    assert capsys.readouterr().err.startswith("jouletrace: replay_path:")


def test_a_bad_value_from_the_environment_exits_2_naming_the_env_var(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("JOULETRACE_POLL_INTERVAL_S", "-1")
    assert main(["sidecar"]) == 2
    err = capsys.readouterr().err
    assert "poll_interval_s" in err and "JOULETRACE_POLL_INTERVAL_S" in err


def test_help_lists_every_knob_with_its_env_var_and_exits_0(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("COLUMNS", "200")
    with pytest.raises(SystemExit) as exit_:
        main(["sidecar", "--help"])
    assert exit_.value.code == 0
    out = capsys.readouterr().out
    missing = [k.name for k in KNOBS if flag_name(k.name) not in out or env_name(k.name) not in out]
    assert missing == []


# ---- the real process ----------------------------------------------------------------------------


def get(url: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=2.0) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as err:
        return err.code, err.read()


def samples(base: str, name: str) -> list[tuple[dict[str, str], float]]:
    """(labels, value) of every sample called ``name`` on /metrics."""
    status, body = get(base + "/metrics")
    assert status == 200
    return [
        (s.labels, s.value)
        for family in text_string_to_metric_families(body.decode())
        for s in family.samples
        if s.name == name
    ]


@pytest.fixture
def run_sidecar(tmp_path: Path) -> Iterator[Callable[..., tuple[str, subprocess.Popen[bytes]]]]:
    """Start ``jouletrace sidecar`` with extra flags; yields (base URL, process); kills leftovers."""
    procs: list[subprocess.Popen[bytes]] = []
    env = {k: v for k, v in os.environ.items() if not k.startswith("JOULETRACE_")}
    log_path = tmp_path / "sidecar.log"
    log = log_path.open("wb")  # a file, not a pipe: a full pipe would block the sidecar

    def start(*flags: str) -> tuple[str, subprocess.Popen[bytes]]:
        port = free_port()
        argv = [sys.executable, "-m", "sidecar.cli", "sidecar", *flags]
        argv += ["--port", str(port), "--otlp-port", str(free_port()), "--host", "127.0.0.1"]
        argv += ["--ledger-path", "", "--proxy-wire-port", "0"]  # no proxy: its port may be taken
        proc = subprocess.Popen(argv, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT)
        procs.append(proc)
        return f"http://127.0.0.1:{port}", proc

    yield start
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
            proc.wait(STOP_TIMEOUT_S)
    log.close()
    print(log_path.read_text(errors="replace"))  # pytest shows it when the test failed


def stop_cleanly(proc: subprocess.Popen[bytes]) -> None:
    proc.send_signal(signal.SIGTERM)
    try:
        code = proc.wait(STOP_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        pytest.fail(f"the sidecar did not exit within {STOP_TIMEOUT_S} s of SIGTERM")
    assert code == 0


@pytest.mark.integration
def test_the_sidecar_process_replays_the_h200_trace_serves_metrics_and_stops_on_sigterm(
    run_sidecar: Callable[..., tuple[str, subprocess.Popen[bytes]]],
) -> None:
    (gpu,) = ReplayMeter(H200_TRACE).devices
    base, proc = run_sidecar("--meter", "replay", "--replay-path", str(H200_TRACE.relative_to(REPO)))
    wait_for(lambda: get(base + "/readyz")[0] == 200, START_TIMEOUT_S, proc)

    energy = {labels["hw_id"]: (labels, value) for labels, value in samples(base, "hw_energy_joules_total")}
    assert gpu.id in energy
    labels, joules = energy[gpu.id]
    assert labels["energy_source"] == "replay"
    assert joules > 0
    ((_, period_s),) = samples(base, "jouletrace_meter_update_period_seconds")
    assert period_s == pytest.approx(0.1, abs=0.015)  # the H200 counter's measured 100 ms

    status, body = get(base + "/v1/requests/nope")
    assert status == 404
    assert json.loads(body)["request_id"] == "nope"

    stop_cleanly(proc)


@pytest.mark.integration
def test_the_sidecar_process_on_the_simulated_gpu_reports_idle_energy_and_stops_on_sigterm(
    run_sidecar: Callable[..., tuple[str, subprocess.Popen[bytes]]],
) -> None:
    base, proc = run_sidecar("--meter", "sim", "--sim-requests", "10", "--settle-s", "0.5")
    wait_for(lambda: get(base + "/readyz")[0] == 200, START_TIMEOUT_S, proc)

    def idle_energy() -> list[tuple[dict[str, str], float]]:
        return [
            (labels, value)
            for labels, value in samples(base, "gen_ai_server_energy_joules_total")
            if labels["jouletrace_phase"] == "idle"
        ]

    # The simulated workload starts after 1 s of idle; idle ticks are sealed settle_s later.
    wait_for(lambda: bool(idle_energy()), START_TIMEOUT_S, proc)
    ((labels, joules),) = idle_energy()
    assert labels["energy_source"] == "simulated"
    assert joules > 0
    ((device, device_j),) = samples(base, "hw_energy_joules_total")
    assert device["hw_id"] == "GPU-sim-0" and device_j > 0
    assert get(base + "/v1/requests/nope")[0] == 404

    stop_cleanly(proc)
