"""One sidecar per ledger file: a second exclusive opening is refused, naming the file and the holder."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from sidecar.errors import ConfigError
from sidecar.export.store import Ledger

REPO = Path(__file__).resolve().parents[3]


def test_a_second_exclusive_ledger_on_one_file_is_refused_naming_ledger_path_and_the_holder(
    tmp_path: Path,
) -> None:
    path = tmp_path / "ledger.db"
    first = Ledger(path, exclusive=True)
    try:
        with pytest.raises(ConfigError) as err:
            Ledger(path, exclusive=True)
        message = str(err.value)
        assert message.startswith("ledger_path:") and str(path) in message
        assert f"process {os.getpid()}" in message
        with Ledger(path) as reader:  # a plain opening (a tool reading the file) is not refused
            assert reader.count() == 0
    finally:
        first.close()
    again = Ledger(path, exclusive=True)  # released by the close
    again.close()


def test_the_lock_goes_with_its_process_so_a_killed_sidecar_never_blocks_the_next(tmp_path: Path) -> None:
    path = tmp_path / "ledger.db"
    script = (
        f"from sidecar.export.store import Ledger; Ledger({str(path)!r}, exclusive=True); "
        "import sys; print('held', flush=True); sys.stdin.read()"
    )
    holder = subprocess.Popen(
        [sys.executable, "-c", script], cwd=REPO, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        with pytest.raises(ConfigError, match=f"process {holder.pid}"):
            Ledger(path, exclusive=True)
    finally:
        holder.kill()  # no close: the lock file stays behind
        holder.wait()
    assert (tmp_path / "ledger.db.lock").exists()
    Ledger(path, exclusive=True).close()


def test_a_lock_file_that_cannot_be_made_is_a_ledger_path_error(tmp_path: Path) -> None:
    (tmp_path / "ledger.db.lock").mkdir()  # a directory where the lock file goes
    with pytest.raises(ConfigError, match="ledger_path: cannot create the lock file"):
        Ledger(tmp_path / "ledger.db", exclusive=True)
