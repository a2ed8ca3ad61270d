"""``jouletrace attribute``: a recorded run (counter CSV + the hook's stream) re-attributed offline."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from sidecar.cli import main
from sidecar.sim.record import write_recording
from sidecar.sim.run import SimRun, simulate
from sidecar.sim.scenarios import scenario


@pytest.fixture(scope="module")
def run() -> SimRun:
    config = scenario("bursty", n_requests=80)
    return simulate(
        replace(config, workload=replace(config.workload, burst_size=40, burst_gap_s=5.0)), seed=5
    )


def attribute(tmp_path: Path, run: SimRun, *extra: str) -> tuple[dict[str, dict[str, object]], str]:
    counter, iterations = write_recording(run, tmp_path / "rec")
    out = tmp_path / "records.jsonl"
    code = main(
        ["attribute", "--energy", str(counter), "--iterations", str(iterations), "--out", str(out), *extra]
    )
    assert code == 0
    records = [json.loads(line) for line in out.read_text().splitlines()]
    return {str(r["request_id"]): r for r in records}, out.read_text()


def test_a_recorded_run_is_re_attributed_close_to_the_truth_and_conserved(
    tmp_path: Path, run: SimRun, capsys: pytest.CaptureFixture[str]
) -> None:
    records, _ = attribute(tmp_path, run)
    assert set(records) == set(run.truth_j)
    rel = [abs(float(records[rid]["energy_j"]) - truth) / truth for rid, truth in run.truth_j.items()]  # type: ignore[arg-type]
    assert float(np.percentile(rel, 95)) < 0.10
    assert all(
        r["final"] and r["rule"] == "fitted" and r["energy_low_j"] is not None for r in records.values()
    )
    summary = capsys.readouterr().err
    assert "requests 80" in summary and "conservation error" in summary
    error_j = float(summary.split("conservation error ")[1].split(" J")[0])
    measured_j = float(summary.split("measured ")[1].split(" J")[0])
    assert error_j < 1e-9 * measured_j


def test_the_same_recording_under_the_study_rule_gives_other_shares(tmp_path: Path, run: SimRun) -> None:
    fitted, _ = attribute(tmp_path, run)
    study, _ = attribute(tmp_path, run, "--rule", "output-tokens")
    assert all(r["rule"] == "output-tokens" for r in study.values())
    moved = [abs(float(study[rid]["energy_j"]) - float(fitted[rid]["energy_j"])) for rid in fitted]  # type: ignore[arg-type]
    assert max(moved) > 1.0  # joules move between requests under another rule


def test_a_stream_line_that_is_not_a_message_is_a_clear_error(
    tmp_path: Path, run: SimRun, capsys: pytest.CaptureFixture[str]
) -> None:
    counter, iterations = write_recording(run, tmp_path / "rec")
    iterations.write_bytes(iterations.read_bytes() + b"not json\n")
    assert main(["attribute", "--energy", str(counter), "--iterations", str(iterations)]) == 2
    assert "iterations.jsonl:" in capsys.readouterr().err


def test_a_message_is_routed_by_its_own_version_field_whatever_the_key_order(
    tmp_path: Path, run: SimRun
) -> None:
    """Another encoder may put "v" anywhere and add spaces: the hook's messages still reach the hook."""
    counter, iterations = write_recording(run, tmp_path / "rec")
    lines = [json.loads(line) for line in iterations.read_text().splitlines()]
    iterations.write_text("".join(json.dumps(m, sort_keys=True) + "\n" for m in lines))  # "v" near the end
    out = tmp_path / "records.jsonl"
    assert (
        main(["attribute", "--energy", str(counter), "--iterations", str(iterations), "--out", str(out)]) == 0
    )
    records = {json.loads(line)["request_id"] for line in out.read_text().splitlines()}
    assert records == set(run.truth_j)


def test_a_counter_trace_of_updates_alone_is_warned_about(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Probe 13: a CSV of the counter's update rows alone, no repeated reads between them, dated every
    update half a period early with no word said."""
    from sidecar.cli_attribute import warn_if_updates_only
    from sidecar.meters.base import Reading

    updates = [Reading(0.1 * k, (10.0 * k,)) for k in range(20)]
    warn_if_updates_only(updates, tmp_path / "updates.csv")
    assert "every row changes the counter" in capsys.readouterr().err
    polled = [
        Reading(0.02 * k, (10.0 * (k // 5),)) for k in range(100)
    ]  # read every 20 ms, updated every 100
    warn_if_updates_only(polled, tmp_path / "polled.csv")
    assert capsys.readouterr().err == ""


@pytest.mark.parametrize(
    ("which", "expected"),
    [
        ("missing-iterations", "--iterations: cannot read"),
        ("iterations-a-folder", "--iterations: cannot read"),
        ("out-in-no-folder", "--out: cannot write"),
    ],
)
def test_a_file_that_cannot_be_read_or_written_is_one_line_naming_its_flag(
    tmp_path: Path, run: SimRun, capsys: pytest.CaptureFixture[str], which: str, expected: str
) -> None:
    """Adversarial probe: each was a traceback (the --out one only after the whole attribution)."""
    counter, iterations = write_recording(run, tmp_path / "rec")
    out = tmp_path / ("no-folder/records.jsonl" if which == "out-in-no-folder" else "records.jsonl")
    if which != "out-in-no-folder":
        iterations = tmp_path / "none.jsonl" if which == "missing-iterations" else tmp_path
    args = ["attribute", "--energy", str(counter), "--iterations", str(iterations), "--out", str(out)]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert expected in err and "Traceback" not in err
