"""The real sidecar in a real memory cgroup: its OTLP memory limit follows the cgroup's limit,
at start and when the limit is changed while it runs (as Kubernetes resizes a container in place).

Needs a cgroup it may create (root, a writable cgroup mount: cgroup v1's memory controller or
cgroup v2 with memory enabled); skipped where there is none, saying why.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc

from sidecar.taps.otlp_limit import LIMIT_REFRESH_S
from tests.support import free_port, wait_for

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
MOUNT = Path("/sys/fs/cgroup")
LIMIT_BYTES = 256 * 1024 * 1024


def _make_cgroup() -> tuple[Path, Path]:
    """A new cgroup with a 256 MiB memory limit: (its limit's file, its file of member pids)."""
    name = f"jouletrace-test-{os.getpid()}-{time.monotonic_ns()}"
    controllers = MOUNT / "cgroup.controllers"
    if controllers.exists() and "memory" in controllers.read_text().split():
        folder = MOUNT / name  # cgroup v2
        folder.mkdir()
        limit = folder / "memory.max"
    else:
        folder = MOUNT / "memory" / name  # cgroup v1
        folder.mkdir()
        limit = folder / "memory.limit_in_bytes"
    limit.write_text(str(LIMIT_BYTES))
    return limit, folder / "cgroup.procs"


@pytest.fixture
def cgroup() -> Iterator[tuple[Path, Path]]:
    try:
        limit, procs = _make_cgroup()
    except OSError as err:
        pytest.skip(f"no memory cgroup can be made here: {err}")
    yield limit, procs
    for _ in range(50):  # empty once the sidecar has exited
        try:
            limit.parent.rmdir()
            return
        except OSError:
            time.sleep(0.1)


def test_the_sidecar_limits_otlp_at_80_percent_of_its_cgroups_limit_and_follows_a_resize(
    cgroup: tuple[Path, Path], tmp_path: Path
) -> None:
    """As the chart runs it (``otlp_memory_limit_mb`` 0: the percentage alone): 256 MiB at start,
    205 MB; the limit raised to 1 GiB while it runs: 819 MB from the first export after the
    limiter's next read (at most LIMIT_REFRESH_S later)."""
    limit, procs = cgroup
    log = tmp_path / "sidecar.log"
    otlp_port = free_port()
    argv = [sys.executable, "-m", "sidecar.cli", "sidecar", "--meter", "sim", "--ledger-path", ""]
    argv += [
        "--otlp-memory-limit-mb=0",
        f"--port={free_port()}",
        f"--otlp-port={otlp_port}",
        "--plugin-port=0",
        "--hook-port=0",
    ]
    with log.open("wb") as out:
        proc = subprocess.Popen(
            argv,
            cwd=REPO,
            stdout=out,
            stderr=subprocess.STDOUT,
            preexec_fn=lambda: procs.write_text(str(os.getpid())),  # joins before it starts
        )
    try:
        wait_for(lambda: "OTLP memory limit" in log.read_text(), 60, proc, log, "the limit's log line")
        limit.write_text(str(4 * LIMIT_BYTES))
        time.sleep(LIMIT_REFRESH_S + 0.5)
        with grpc.insecure_channel(f"127.0.0.1:{otlp_port}") as channel:
            export = trace_service_pb2_grpc.TraceServiceStub(channel).Export
            export(trace_service_pb2.ExportTraceServiceRequest(), timeout=10)
        wait_for(lambda: "OTLP memory limit now" in log.read_text(), 10, proc, log, "the new limit's line")
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(15)
    lines = [x for x in log.read_text().splitlines() if "OTLP memory limit" in x]
    assert "OTLP memory limit: 205 MB" in lines[0] and "container limit 256 MB" in lines[0], lines
    assert "OTLP memory limit now 819 MB, was 205 MB" in lines[1], lines
