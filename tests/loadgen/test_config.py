"""A run's settings: out-of-range numbers and an unusable results folder are refused before the run."""

from __future__ import annotations

from pathlib import Path

import pytest

from loadgen.config import MAX_BATCH, MAX_REQUESTS, RunConfig
from loadgen.errors import InputError
from sidecar.cli import main


@pytest.mark.parametrize(
    ("field", "value"),
    [("requests", MAX_REQUESTS + 1), ("requests", 399_999_996), ("batch_cap", MAX_BATCH + 1),
     ("max_model_len", 10**12), ("seed", 2**64)],
)  # fmt: skip
def test_a_whole_number_above_its_bound_is_refused_naming_its_flag(field: str, value: int) -> None:
    with pytest.raises(InputError, match=f"--{field.replace('_', '-')}: must be a whole number >= .* and <="):
        RunConfig(**{field: value})


def test_the_bounds_themselves_are_accepted() -> None:
    assert RunConfig(requests=MAX_REQUESTS, batch_cap=MAX_BATCH).requests == MAX_REQUESTS


def test_an_out_folder_that_cannot_be_made_is_refused_before_the_run(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    blocker = tmp_path / "afile"
    blocker.write_text("x")
    with pytest.raises(
        InputError, match=r"--out .*afile/results: cannot create the folder \(Not a directory\)"
    ):
        RunConfig(out_dir=str(blocker / "results")).make_out_dir()
    # no server answers at 127.0.0.1:9: the refusal comes first, not the unreachable server
    argv = [
        "loadgen",
        "run",
        "--server-url",
        "http://127.0.0.1:9",
        "--sidecar-url",
        "",
        "--otlp-endpoint",
        "",
    ]
    assert main([*argv, "--quiet", "--out", str(blocker / "results")]) == 2
    assert "--out" in capsys.readouterr().err


def test_the_out_folder_is_made_up_front(tmp_path: Path) -> None:
    out = tmp_path / "a" / "b"
    assert RunConfig(out_dir=str(out)).make_out_dir() == out
    assert out.is_dir()
    assert RunConfig().make_out_dir() is None
