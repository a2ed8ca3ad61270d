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


@pytest.mark.parametrize(
    "content, expected",
    [
        (b"0\nnan\n1\n", r"t:2: field 'timestamp': expected a finite number, got 'nan'"),
        (b"0\n1\ninf\n", r"t:3: field 'timestamp': expected a finite number, got 'inf'"),
        (b"timestamp,user\n0,a\n-inf,b\n", r"t:3: field 'timestamp': expected a finite number"),
        (b'{"timestamp": 0}\n{"timestamp": NaN}\n', r"t:2: not valid JSON \(NaN is not a JSON number\)"),
        (b'{"timestamp": 0}\n{"timestamp": true}\n', r"t:2: field 'timestamp': expected a finite number"),
        (b'{"timestamp": 0}\n[1]\n', r"t:2: field 'timestamp': missing"),
        (b"timestamps,x\n0,1\n", r"t:1: header has no 'timestamp' column"),
        (b"timestamp\n0\n1 \xe9\n", r"t:3: not UTF-8 text"),
        (b"0\n1e308\n", r"t: the trace spans 1e\+308 s; at most 604800 s"),
    ],
    ids=["nan", "inf", "csv-inf", "jsonl-nan", "jsonl-bool", "jsonl-list", "header", "latin-1", "1e308"],
)
def test_a_trace_with_a_timestamp_that_cannot_be_waited_for_is_refused_naming_the_line(
    tmp_path: Path, content: bytes, expected: str
) -> None:
    f = tmp_path / "t"
    f.write_bytes(content)
    with pytest.raises(InputError, match=expected):
        replay(f, None)


@pytest.mark.parametrize("speed", ["nan", "inf", "0"])
def test_a_replay_speed_that_is_not_a_finite_number_above_0_is_refused(tmp_path: Path, speed: str) -> None:
    f = tmp_path / "t"
    f.write_text("0\n1\n")
    with pytest.raises(InputError, match="replay speed must be a finite number > 0"):
        parse_arrivals(f"replay:{f}:{speed}", None, seed=0)
