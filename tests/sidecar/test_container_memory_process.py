"""The real sidecar in a real memory cgroup: its OTLP memory limit follows the cgroup's limit.

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

import pytest

from tests.support import free_port, wait_for

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
MOUNT = Path("/sys/fs/cgroup")
LIMIT_BYTES = 256 * 1024 * 1024


def _make_cgroup() -> tuple[Path, Path]:
    """A new cgroup with a 256 MiB memory limit: (its folder, its file of member pids)."""
    name = f"jouletrace-test-{os.getpid()}-{time.monotonic_ns()}"
    controllers = MOUNT / "cgroup.controllers"
    if controllers.exists() and "memory" in controllers.read_text().split():
        folder = MOUNT / name  # cgroup v2
        folder.mkdir()
        (folder / "memory.max").write_text(str(LIMIT_BYTES))
    else:
        folder = MOUNT / "memory" / name  # cgroup v1
        folder.mkdir()
        (folder / "memory.limit_in_bytes").write_text(str(LIMIT_BYTES))
    return folder, folder / "cgroup.procs"


@pytest.fixture
def cgroup() -> Iterator[Path]:
    try:
        folder, procs = _make_cgroup()
    except OSError as err:
        pytest.skip(f"no memory cgroup can be made here: {err}")
    yield procs
    for _ in range(50):  # empty once the sidecar has exited
        try:
            folder.rmdir()
            return
        except OSError:
            time.sleep(0.1)


def test_the_sidecar_in_a_256_mb_cgroup_limits_otlp_at_80_percent(cgroup: Path, tmp_path: Path) -> None:
    log = tmp_path / "sidecar.log"
    argv = [sys.executable, "-m", "sidecar.cli", "sidecar", "--meter", "sim", "--ledger-path", ""]
    argv += [f"--port={free_port()}", f"--otlp-port={free_port()}", "--plugin-port=0", "--hook-port=0"]
    with log.open("wb") as out:
        proc = subprocess.Popen(
            argv,
            cwd=REPO,
            stdout=out,
            stderr=subprocess.STDOUT,
            preexec_fn=lambda: cgroup.write_text(str(os.getpid())),  # joins before it starts
        )
    try:
        wait_for(lambda: "OTLP memory limit" in log.read_text(), 60, proc, log, "the limit's log line")
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(15)
    line = next(x for x in log.read_text().splitlines() if "OTLP memory limit" in x)
    assert "OTLP memory limit: 205 MB" in line and "container limit 256 MB" in line, line
