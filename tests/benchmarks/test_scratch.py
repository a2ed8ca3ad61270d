"""benchmarks/scratch.py: a benchmark's folder goes when the run ends well, stays when it fails."""

from __future__ import annotations

import importlib.util
import shutil
from pathlib import Path

import pytest

_SPEC = importlib.util.spec_from_file_location(
    "scratch_bench", Path(__file__).resolve().parents[2] / "benchmarks" / "scratch.py"
)
assert _SPEC is not None and _SPEC.loader is not None
_MODULE = importlib.util.module_from_spec(_SPEC)
_SPEC.loader.exec_module(_MODULE)
scratch_dir = _MODULE.scratch_dir


def test_the_folder_is_removed_after_a_clean_run() -> None:
    with scratch_dir("jt-scratch-test-") as path:
        (path / "ledger.db").write_bytes(b"x" * 1024)
        assert path.is_dir()
    assert not path.exists()


def test_the_folder_is_kept_and_named_when_the_run_fails(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(RuntimeError), scratch_dir("jt-scratch-test-") as path:
        (path / "sidecar.log").write_text("the sidecar said why")
        raise RuntimeError("the run failed")
    try:
        assert (path / "sidecar.log").read_text() == "the sidecar said why"
        assert str(path) in capsys.readouterr().err
    finally:
        shutil.rmtree(path)
