"""Faults against the real ``jouletrace sidecar`` process: every tap's hostile inputs, a hung then
garbage /metrics target, SIGTERM, and a restart on the same ledger.

The simulated GPU (``--meter sim``, with its own simulated workload) stands in for an
NVIDIA GPU, which cannot run here. While /healthz is watched, the sidecar gets good
items next to bad ones on every tap (OTLP over gRPC: poison spans, a truncated, an
undecodable and an oversized export, a flood at 10x a busy server's span rate; plugin and scheduler-hook
datagrams over UDP: poison headers, rows and bytes; hostile HTTP paths), and its vLLM
/metrics target first hangs, then serves garbage, then a good page. Then it is stopped
(SIGTERM) and started again on the same ledger, where a retried span of a request it
already stored arrives again (vLLM's exporter retries after a failed export).
"""

from __future__ import annotations

import signal
import socket
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.faults import hostile as h
from tests.faults.conftest import HealthWatch
from tests.support import free_port, metrics, taps, wait_for

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
GRACE_S = 5.0
# vLLM's span tap sees one span per request: 50 requests/s is a busy server; the flood is 10x that
FLOOD, FLOOD_RATE = 1000, 500.0
HEALTH_TIMEOUT_S = 10.0  # the tick shares the event loop with /healthz: a flood slows it (printed)


class Sidecar:
    """``jouletrace sidecar`` as a process on fixed ports, its output in a log file."""

    def __init__(self, tmp: Path, ledger: Path, target_url: str, sim_requests: int) -> None:
        self.ports = {"http": free_port(), "otlp": free_port()}
        self.ports |= {k: free_port(socket.SOCK_DGRAM) for k in ("plugin", "hook")}
        self.base = f"http://127.0.0.1:{self.ports['http']}"
        argv = [sys.executable, "-m", "sidecar.cli", "sidecar", "--meter", "sim", "--host", "127.0.0.1"]
        argv += ["--sim-requests", str(sim_requests), "--settle-s", "1", "--shutdown-grace-s", str(GRACE_S)]
        argv += ["--ledger-path", str(ledger), "--port", str(self.ports["http"])]
        argv += ["--otlp-port", str(self.ports["otlp"]), "--otlp-max-message-bytes", "65536"]
        argv += ["--plugin-port", str(self.ports["plugin"]), "--hook-port", str(self.ports["hook"])]
        argv += ["--vllm-metrics-url", target_url, "--vllm-metrics-interval-s", "0.5"]
        self.log = tmp / f"sidecar-{time.monotonic_ns()}.log"
        with self.log.open("wb") as out:
            self.proc = subprocess.Popen(argv, cwd=REPO, stdout=out, stderr=subprocess.STDOUT)
        wait_for(lambda: h.get(self.base + "/readyz")[0] == 200, 60, self.proc, self.log, "readyz")

    def final(self, ids: list[str], timeout_s: float = 30.0) -> dict[str, Any]:
        import json

        records: dict[str, Any] = {}
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline and len(records) < len(ids):
            for rid in ids:
                status, body = h.get(f"{self.base}/v1/requests/{rid}")
                if status == 200 and json.loads(body)["final"]:
                    records[rid] = json.loads(body)
            time.sleep(0.3)
        return records

    def stop(self) -> tuple[int, float]:
        """SIGTERM: (exit code, seconds it took)."""
        t0 = time.monotonic()
        self.proc.send_signal(signal.SIGTERM)
        try:
            code = self.proc.wait(GRACE_S + 5.0)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait()
        return code, time.monotonic() - t0


def ledger_rows(path: Path) -> dict[str, tuple[float, int]]:
    with sqlite3.connect(path) as conn:
        rows = conn.execute("SELECT request_id, energy_j, seq FROM requests").fetchall()
    return {rid: (energy_j, seq) for rid, energy_j, seq in rows}


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    tmp = tmp_path_factory.mktemp("hostile")
    ledger = tmp / "ledger.db"
    target = h.MetricsTarget()
    out: dict[str, Any] = {}
    try:
        first = Sidecar(tmp, ledger, target.url, sim_requests=30)
        time.sleep(1.0)  # the good items' work lies after the sidecar's first counter reading
        with HealthWatch(first.base + "/healthz", timeout_s=HEALTH_TIMEOUT_S) as health:
            out["otlp"] = h.otlp_faults(first.ports["otlp"], FLOOD, FLOOD_RATE)
            good = out["otlp"]["good"] + h.plugin_run(first.ports["plugin"]) + h.hook_run(first.ports["hook"])
            out["http"] = h.http_probe(first.base)
            target.mode = "garbage"
            time.sleep(2.0)
            target.mode = "good"
            out["records"] = first.final(good)
            time.sleep(2.0)  # scrapes of the good page, more ticks
            out["good"], out["metrics"], out["health"] = good, metrics(first.base), health
        out["stop"] = first.stop()
        out["ledger"] = ledger_rows(ledger)
        second = Sidecar(tmp, ledger, target.url, sim_requests=1)
        h.otlp_retry(second.ports["otlp"], out["otlp"]["retry"])  # vLLM's exporter retries good-o0's span
        time.sleep(3.0)  # past settle_s: the retried span's request is sealed
        out["metrics2"] = metrics(second.base)
        out["stop2"] = second.stop()
        out["ledger2"] = ledger_rows(ledger)
        out["log"] = first.log.read_text(errors="replace")
        yield out
    finally:
        target.close()


def test_every_good_item_next_to_a_bad_one_is_final(run: dict[str, Any]) -> None:
    assert set(run["records"]) == set(run["good"])
    for rid, rec in run["records"].items():
        assert rec["energy_j"] > 0 and rec["output_tokens"] == 5, rid


def test_bad_exports_are_refused_with_their_grpc_status_and_poison_spans_reported(
    run: dict[str, Any],
) -> None:
    assert run["otlp"]["codes"] == ["INVALID_ARGUMENT", "INVALID_ARGUMENT", "RESOURCE_EXHAUSTED"]
    # partial_success: every poison span is refused on arrival (its values, its id, its times)
    assert run["otlp"]["mixed"] == 7
    t = taps(run["metrics"])
    assert t[("otlp", "refused_undecodable")] == 2 and t[("otlp", "refused_too_large")] == 1
    rejected = sum(
        v for (tap, outcome), v in t.items() if tap in ("otlp", "vllm_spans") and "rejected" in outcome
    )
    assert rejected >= 7


def test_the_span_flood_is_taken_whole(run: dict[str, Any]) -> None:
    t = taps(run["metrics"])
    assert t[("otlp", "dropped")] == 0 and t[("otlp", "received")] >= FLOOD + 12
    print(f"{FLOOD} spans over gRPC in {run['otlp']['flood_s']:.1f} s")


def test_poison_datagrams_are_counted_on_both_udp_taps(run: dict[str, Any]) -> None:
    t = taps(run["metrics"])
    plugin = sum(
        v for (tap, o), v in t.items() if tap == "vllm_plugin" and (o == "malformed" or "rejected" in o)
    )
    hook = sum(v for (tap, o), v in t.items() if tap == "vllm_hook" and (o == "malformed" or "rejected" in o))
    assert plugin >= 5 and hook >= 3
    assert (
        t.get(("vllm_plugin", "internal_errors"), 0) == 0 and t.get(("vllm_hook", "internal_errors"), 0) == 0
    )


def test_hostile_http_paths_get_4xx_and_are_counted(run: dict[str, Any]) -> None:
    assert all(400 <= status < 500 for status in run["http"].values()), run["http"]
    t = taps(run["metrics"])
    assert t[("http_api", "rejected_energy_interval")] == 4 and t[("http_api", "rejected_bad_id")] >= 2


def test_a_hung_then_garbage_metrics_target_is_counted_and_scraping_recovers(run: dict[str, Any]) -> None:
    t = taps(run["metrics"])
    assert t[("vllm_metrics", "timeouts")] >= 1 and t[("vllm_metrics", "malformed")] >= 1
    assert t[("vllm_metrics", "scrapes")] >= 1  # the good page, once it came


def test_no_crash_conservation_and_healthz_200_throughout(run: dict[str, Any]) -> None:
    m = run["metrics"]
    measured = sum(v for _, v in m["hw_energy_joules_total"])
    error = sum(v for _, v in m["jouletrace_conservation_error_joules"])
    assert measured > 0 and error <= 1e-9 * measured + 1e-9
    health = run["health"]
    print(f"/healthz: {health.checks} checks, slowest {health.slowest_s:.2f} s")
    assert health.checks > 20 and health.failures == []
    assert "Traceback" not in run["log"]


def test_sigterm_exits_0_within_the_grace_period(run: dict[str, Any]) -> None:
    for key in ("stop", "stop2"):
        code, took_s = run[key]
        assert code == 0 and took_s < GRACE_S + 1.0, (key, code, took_s)


def test_a_restart_on_the_same_ledger_counts_nothing_twice_and_its_counters_start_afresh(
    run: dict[str, Any],
) -> None:
    before, after = run["ledger"], run["ledger2"]
    assert all(rid in before for rid in run["good"])
    for rid in run["good"]:  # the retried span of good-o0 did not store good-o0 again
        assert after[rid] == before[rid], rid
    t2 = taps(run["metrics2"])
    assert t2[("ledger", "duplicate_kept")] >= 1
    assert t2.get(("otlp", "refused_too_large"), 0) == 0 and t2[("otlp", "received")] == 1
    measured2 = sum(v for _, v in run["metrics2"]["hw_energy_joules_total"])
    assert 0 < measured2 < sum(v for _, v in run["metrics"]["hw_energy_joules_total"])
