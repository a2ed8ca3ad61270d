"""The datagram value checks: each gives back a good value and refuses a bad one by name."""

from __future__ import annotations

import math
from typing import Any

import pytest

from sidecar.contracts.json_checks import MAX_INT, int_of, ints_of, list_of, row_of, seconds_of, str_of


def test_good_values_come_back_as_they_are() -> None:
    assert int_of(7, "n") == 7
    assert ints_of([0, 3, MAX_INT], "idx", MAX_INT) == [0, 3, MAX_INT]
    assert seconds_of(2, "t") == 2.0 and type(seconds_of(2, "t")) is float
    assert str_of("stop", "reason", 0, 32) == "stop"
    assert row_of([1, 2], 2, "fin") == [1, 2]
    assert list_of([], "gone") == []


@pytest.mark.parametrize(
    ("check", "value", "name"),
    [
        (lambda v: int_of(v, "output_tokens", 100), True, "output_tokens"),  # a bool is not a count
        (lambda v: int_of(v, "output_tokens", 100), 101, "output_tokens"),
        (lambda v: int_of(v, "output_tokens", 100), -1, "output_tokens"),
        (lambda v: ints_of(v, "scheduled", 100), [1, True], "scheduled"),
        (lambda v: ints_of(v, "scheduled", 100), [1, 2.0], "scheduled"),
        (lambda v: seconds_of(v, "wall"), 10**400, "wall"),  # an int too large for a float
        (lambda v: seconds_of(v, "wall"), math.nan, "wall"),
        (lambda v: seconds_of(v, "wall"), 86_401.0, "wall"),
        (lambda v: seconds_of(v, "wall"), "1", "wall"),
        (lambda v: str_of(v, "reason", 0, 4), "stopped", "reason"),
        (lambda v: row_of(v, 3, "fin"), [1, 2], "fin"),
        (lambda v: list_of(v, "gone"), {"a": 1}, "gone"),
    ],
)
def test_a_bad_value_is_refused_with_its_field_named(check: Any, value: Any, name: str) -> None:
    with pytest.raises(ValueError, match=name):
        check(value)
