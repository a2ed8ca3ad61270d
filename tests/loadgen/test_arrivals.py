"""Arrival processes: deterministic in the seed, at the asked rate, with the asked burstiness."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from loadgen.arrivals import parse_arrivals, replay
from loadgen.errors import InputError


def test_all_at_once_sends_everything_at_time_zero() -> None:
    s = parse_arrivals("all", 50, seed=0)
    assert len(s) == 50 and not s.offsets_s.any() and s.max_in_flight is None


@pytest.mark.parametrize("spec", ["poisson:20", "gamma:20:0.5", "gamma:20:4"])
def test_same_seed_gives_the_same_schedule_and_another_seed_another(spec: str) -> None:
    a, b, c = (parse_arrivals(spec, 500, seed) for seed in (7, 7, 8))
    assert np.array_equal(a.offsets_s, b.offsets_s)
    assert not np.array_equal(a.offsets_s, c.offsets_s)


@pytest.mark.parametrize("spec, cv", [("poisson:50", 1.0), ("gamma:50:0.25", 2.0), ("gamma:50:4", 0.5)])
def test_mean_rate_and_gap_variability_match_the_asked_process(spec: str, cv: float) -> None:
    s = parse_arrivals(spec, 40_000, seed=3)
    gaps = np.diff(s.offsets_s)
    assert 1 / gaps.mean() == pytest.approx(50, rel=0.03)
    assert gaps.std() / gaps.mean() == pytest.approx(cv, rel=0.05)
    assert np.all(gaps >= 0) and s.offsets_s[0] == 0


def test_concurrency_caps_requests_in_flight() -> None:
    s = parse_arrivals("concurrency:8", 100, seed=0)
    assert s.max_in_flight == 8 and len(s) == 100


def test_replay_reads_csv_with_header_and_plain_lines_relative_to_the_first(tmp_path: Path) -> None:
    f = tmp_path / "trace.csv"
    f.write_text("timestamp,user\n100.0,a\n100.5,b\n102.0,c\n")
    assert replay(f, None).offsets_s.tolist() == [0.0, 0.5, 2.0]
    g = tmp_path / "plain.txt"
    g.write_text("5\n6\n\n9\n")
    assert parse_arrivals(f"replay:{g}:2", 3, seed=0).offsets_s.tolist() == [0.0, 0.5, 2.0]


def test_replay_jsonl_errors_name_file_line_and_field(tmp_path: Path) -> None:
    f = tmp_path / "t.jsonl"
    f.write_text('{"timestamp": 1}\n{"timestamp": "soon"}\n')
    with pytest.raises(InputError, match=r"t\.jsonl:2: field 'timestamp'"):
        replay(f, None)


def test_replay_rejects_decreasing_timestamps_and_too_few_of_them(tmp_path: Path) -> None:
    f = tmp_path / "t.txt"
    f.write_text("1\n3\n2\n")
    with pytest.raises(InputError, match=r"t\.txt:3: field 'timestamp': timestamps must not decrease"):
        replay(f, None)
    with pytest.raises(InputError, match="4 requests asked but the trace has 3"):
        replay(f, 4)


@pytest.mark.parametrize("bad", ["poisson", "poisson:x", "gamma:1", "often", "concurrency:0", "poisson:-1"])
def test_malformed_arrival_specs_are_input_errors(bad: str) -> None:
    with pytest.raises(InputError, match=r"--arrivals|must be > 0"):
        parse_arrivals(bad, 10, seed=0)


def test_constant_rate_spaces_requests_evenly() -> None:
    s = parse_arrivals("constant:4", 5, seed=0)
    assert s.offsets_s.tolist() == [0.0, 0.25, 0.5, 0.75, 1.0]
