"""The plugin's wire rows: named on both ends, JSON arrays in between, strict when read."""

from __future__ import annotations

import json

import pytest

from sidecar.contracts.vllm_wire import VERSION, Finish, Iteration, Sched, Start, decode, encode


def test_named_rows_travel_as_arrays_and_read_back_by_name() -> None:
    message = {
        "v": VERSION,
        "pid": 7,
        "seq": 0,
        "wall": 100.0,
        "it": Iteration(0.002, 3, 16, 4),
        "sched": Sched(3, 1, 0.25),
        "start": [Start("cmpl-a", 20, 16, 0.05)],
        "fin": [Finish("cmpl-b", 12, 8, 0.01, 0.02, 0.3, 0.33, "stop")],
    }
    (data,) = encode(message)
    assert json.loads(data)["fin"] == [["cmpl-b", 12, 8, 0.01, 0.02, 0.3, 0.33, "stop"]]  # compact arrays
    got = decode(data)
    finish = Finish.parse(got["fin"][0])
    assert finish.request_id == "cmpl-b" and finish.decode_s == 0.3 and finish.finish_reason == "stop"
    assert Start.parse(got["start"][0]).computed_tokens == 16
    assert Iteration.parse(got["it"]) == Iteration(0.002, 3, 16, 4, 0)
    assert Sched.parse(got["sched"]).kv_cache_usage == 0.25


def test_optional_trailing_fields_take_their_defaults() -> None:
    assert Finish.parse(["r", 1, 2, 0, 0, 0, 0]).finish_reason == ""
    assert Iteration.parse([0.0, 1, 2]) == Iteration(0.0, 1, 2, 0, 0)


def test_extra_trailing_fields_from_a_newer_plugin_are_ignored() -> None:
    assert Start.parse(["r", 1, 1, 0.1, "future"]) == Start("r", 1, 1, 0.1)


@pytest.mark.parametrize(
    "row",
    [
        ["r", 1, 2],  # short
        "not a row",
        ["r", "x", 1, 0.1],  # a token count that is not a number
        ["r", None, 1, 0.1],  # null
        ["r", True, 1, 0.1],  # a boolean is not a count
        ["r", [1], 1, 0.1],  # nested
    ],
)
def test_bad_start_rows_raise_value_error(row: object) -> None:
    with pytest.raises(ValueError):
        Start.parse(row)


@pytest.mark.parametrize("data", [b"[" * 100_000, b'{"v": 1, "x": ' + b"[" * 100_000 + b"}"])
def test_json_nested_too_deep_is_a_value_error_not_a_recursion_error(data: bytes) -> None:
    """A RecursionError escaped the plugin receiver's feed and failed the whole tick."""
    with pytest.raises(ValueError, match="not JSON"):
        decode(data)


def _split(message: dict[str, object]) -> list[dict[str, object]]:
    from sidecar.contracts.vllm_wire import MAX_DATAGRAM_BYTES, decode, encode

    parts = encode(message)
    assert all(len(p) <= MAX_DATAGRAM_BYTES for p in parts)
    return [decode(p) for p in parts]


def test_rows_are_split_by_size_so_no_row_costs_its_neighbours() -> None:
    """Adversarial probe: rows went out in fixed groups of 150 and a group over the size limit was
    dropped whole: 150 starts with ids of 79 CJK characters (6 bytes each in JSON) sent nothing,
    ``it`` included; 500 ``gone`` ids of 134 characters dropped the first datagram and its fins."""
    head: dict[str, object] = {"v": 1, "pid": 7, "seq": 3, "wall": 1.0, "it": [0.0, 150, 0, 0, 0]}
    starts = [[f"{'漢' * 79}{k}", 10, 10, 0.01] for k in range(150)]
    fins = [[f"f{k}", 1, 2, 0, 0, 0, 0.1, "stop"] for k in range(10)]
    gone = [f"{'g' * 130}{k:04d}" for k in range(500)]
    parts = _split({**head, "start": starts, "fin": fins, "gone": gone})
    assert parts[0]["it"] == head["it"] and all("it" not in p for p in parts[1:])
    assert [r for p in parts for r in p["start"]] == starts  # type: ignore[attr-defined]
    assert [r for p in parts for r in p["fin"]] == fins  # type: ignore[attr-defined]
    assert [r for p in parts for r in p["gone"]] == gone  # type: ignore[attr-defined]


def test_a_row_too_big_for_any_datagram_is_dropped_alone() -> None:
    big = [[f"{'x' * 35_000}{k}", 1, 2, 0, 0, 0, 0.1, "stop"] for k in range(2)]
    good = [[f"f{k}", 1, 2, 0, 0, 0, 0.1, "stop"] for k in range(10)]
    parts = _split({"v": 1, "pid": 7, "seq": 3, "wall": 1.0, "it": [0.0, 1, 0, 0, 0], "fin": [*big, *good]})
    assert [r for p in parts for r in p["fin"]] == [*big, *good]  # 35 KB each: one to a datagram
    huge = [["y" * 70_000, 1, 2, 0, 0, 0, 0.1, "stop"], *good]
    parts = _split({"v": 1, "pid": 7, "seq": 4, "wall": 1.0, "it": [0.0, 1, 0, 0, 0], "fin": huge})
    assert [r for p in parts for r in p["fin"]] == good and parts[0]["it"] == [0.0, 1, 0, 0, 0]
