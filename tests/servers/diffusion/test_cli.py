"""``jouletrace diffusion serve`` start-up errors: one line naming the flag, exit 2, no traceback."""

from __future__ import annotations

from pathlib import Path

import pytest

from sidecar.cli import main


def test_a_model_folder_that_is_not_there_is_one_line_naming_model(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Probe 12: a --model folder built elsewhere (docs/diffusion.md's quick start) ended in
    diffusers' OSError traceback."""
    missing = tmp_path / "tiny-image"
    args = ["diffusion", "serve", "--model", str(missing), "--device", "cpu", "--otlp-endpoint", ""]
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("jouletrace diffusion serve: --model: cannot load a diffusers pipeline: ")
    assert str(missing) in err and "jouletrace models build image" in err
    assert "Traceback" not in err and len(err.splitlines()) == 1
