"""Checks of a decoded JSON datagram's values, stdlib only (the scheduler hook's wire imports them
inside vLLM): each gives the value back if it is what is asked, else raises ``ValueError`` naming
the field, so a decoder refuses one bad message with a reason and keeps the next."""

from __future__ import annotations

import math
from typing import Any

__all__ = ["MAX_AGO_S", "MAX_INT", "int_of", "ints_of", "list_of", "row_of", "seconds_of", "str_of"]

MAX_INT = 2**53  # the largest integer a float holds exactly: beyond it a count is not a count
MAX_AGO_S = 86_400.0  # a duration or age over a day is not one a datagram can carry


def row_of(row: Any, n: int, name: str) -> list[Any]:
    if not isinstance(row, list) or len(row) != n:
        raise ValueError(f"{name} row is not a list of {n}")
    return row


def list_of(value: Any, name: str) -> list[Any]:
    if not isinstance(value, list):
        raise ValueError(f"{name!r} is not a list")
    return value


def int_of(value: Any, name: str, high: int = MAX_INT) -> int:
    if type(value) is not int or not 0 <= value <= high:
        raise ValueError(f"{name} is not an integer in 0..{high}")
    return value


def ints_of(values: list[Any], name: str, high: int) -> list[int]:
    """A list of integers in 0..high, checked at C speed (a step has hundreds)."""
    if values and not (set(map(type, values)) == {int} and min(values) >= 0 and max(values) <= high):
        raise ValueError(f"{name} is not a list of integers in 0..{high}")
    return values


def seconds_of(value: Any, name: str, low: float = 0.0, high: float = MAX_AGO_S) -> float:
    if type(value) not in (int, float) or (type(value) is int and abs(value) > MAX_INT):
        raise ValueError(f"{name} is not a finite number in {low}..{high}")  # (an int too large for a float)
    if not (math.isfinite(value) and low <= value <= high):
        raise ValueError(f"{name} is not a finite number in {low}..{high}")
    return float(value)


def str_of(value: Any, name: str, low: int, high: int) -> str:
    if not isinstance(value, str) or not low <= len(value) <= high:
        raise ValueError(f"{name} is not a string of {low}..{high} characters")
    return value
