"""SIGTERM against the real ``jouletrace sidecar`` process: exit 0 within the grace period, records flushed.

The simulated GPU (``--meter sim``) stands in for an NVIDIA GPU, which cannot run here.
With ``--settle-s 30`` nothing is sealed while the process runs 6 s, so every final
record in the ledger after the stop was sealed by the stop itself.
"""

from __future__ import annotations

import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from sidecar.export.store import Ledger
from tests.sidecar.test_cli import REPO, START_TIMEOUT_S, get
from tests.support import free_port, wait_for

GRACE_S = 5.0


@pytest.mark.integration
def test_sigterm_seals_final_records_stores_the_rest_and_exits_0_within_the_grace_period(
    tmp_path: Path,
) -> None:
    ledger_path = tmp_path / "ledger.db"
    port = free_port()
    argv = [sys.executable, "-m", "sidecar.cli", "sidecar", "--meter", "sim", "--sim-requests", "40"]
    argv += ["--settle-s", "30", "--shutdown-grace-s", str(GRACE_S), "--ledger-path", str(ledger_path)]
    argv += ["--port", str(port), "--otlp-port", str(free_port()), "--plugin-port", "0", "--hook-port", "0"]
    argv += ["--host", "127.0.0.1"]
    log_path = tmp_path / "sidecar.log"
    with log_path.open("wb") as log:
        proc = subprocess.Popen(argv, cwd=REPO, stdout=log, stderr=subprocess.STDOUT)
        try:
            base = f"http://127.0.0.1:{port}"
            wait_for(lambda: get(base + "/readyz")[0] == 200, START_TIMEOUT_S, proc)
            time.sleep(6.0)  # the simulated workload starts after 1 s; requests end and others run
            t0 = time.monotonic()
            proc.send_signal(signal.SIGTERM)
            code = proc.wait(GRACE_S + 3.0)
            took_s = time.monotonic() - t0
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    print(log_path.read_text(errors="replace"))
    assert code == 0
    assert took_s < GRACE_S + 1.0  # the grace period plus interpreter exit
    with sqlite3.connect(ledger_path) as conn:
        finals = conn.execute("SELECT count(*) FROM requests").fetchone()[0]
    with Ledger(str(ledger_path)) as ledger:
        state = ledger.load_state("provisional")
        recent = ledger.recent(1000)
    assert finals > 0  # without the stop's seal, settle_s = 30 would have left none
    assert all(r["final"] for r in recent) and sum(r["energy_j"] for r in recent) > 0
    assert state is not None and "records" in state
    assert all(not r["final"] for r in state["records"])
    print(f"stop took {took_s:.2f} s: {finals} final records, {len(state['records'])} provisional")
