"""Live requests' infos as columns of the request table: no ``RequestInfo`` object held a request.

A tap's :class:`~sidecar.attribution.events.RequestInfo` is taken apart when the table keeps it:
its times and output units in one float array, its token counts in one int array, whether it
names a start and an end and is exact in a byte of flags, and its operation, task, unit and
attributes (shared strings, and the tap's own mapping, kept as they are) in four lists. The info
is built again when asked for (:meth:`InfoColumns.get`, :meth:`InfoColumns.get_many`: the same
values; times come back as floats and counts as ints). What a request in flight held for its
info (``benchmarks/inflight_bytes.py``, 2026-12-05): the object, 128 bytes, and its two times and
two counts as boxed numbers, ~77 more; the columns take 41 bytes a row and four list slots.

An info whose token counts do not fit 64 bits (a tap's bug: the edges refuse such counts) is
kept whole, as it came, in a dict beside the columns, so nothing is lost for it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from operator import attrgetter, itemgetter
from typing import Any, NamedTuple

import numpy as np

from sidecar.attribution.events import RequestInfo

__all__ = ["InfoColumns", "InfoFields"]

_HAS, _START, _END, _EXACT = 1, 2, 4, 8  # flag bits; 0: no info in the columns
_Texts = list[str | None]
# an info's fields as the columns take them, read at C speed
_FIELDS = attrgetter(
    "start_s",
    "end_s",
    "output_units",
    "prompt_tokens",
    "output_tokens",
    "exact",
    "operation",
    "task",
    "unit",
    "attributes",
)


class InfoFields(NamedTuple):
    """Some rows' infos as lists, one item a row, in ``RequestInfo``'s field order after its id."""

    model: list[str | None]  # None: "unknown", or no info
    operation: list[str | None]
    task: list[str | None]
    start_s: list[float | None]
    end_s: list[float | None]
    prompt_tokens: list[int]
    output_tokens: list[int]
    output_units: list[float]
    unit: list[str | None]
    attributes: list[Mapping[str, str] | None]
    exact: list[bool]


_NO_INFO = RequestInfo("")  # what a row with no info reads as (RequestInfo's defaults)
_FIELDS_IN_ORDER = attrgetter(*InfoFields._fields[1:])


def _times(values: tuple[float | None, ...], flags: np.ndarray, bit: int) -> np.ndarray:
    """``values`` as floats (None as 0.0), and ``bit`` set in ``flags`` where a value is given."""
    if values.count(None) == 0:  # identity first, at C speed: the usual batch names every time
        flags |= bit
        return np.array(values, dtype=np.float64)
    given = np.array([v is not None for v in values], dtype=bool)
    flags[given] |= bit
    return np.array([0.0 if v is None else v for v in values], dtype=np.float64)


def _optional(values: np.ndarray, given: np.ndarray) -> list[float | None]:
    """``values`` as a list, None where ``given`` is 0."""
    out: list[float | None] = values.tolist()
    if not given.all():
        for k in np.flatnonzero(given == 0).tolist():
            out[k] = None
    return out


class InfoColumns:
    """Each row's info as columns (rows as the request table numbers them)."""

    __slots__ = ("attributes", "flags", "operations", "tasks", "times", "tokens", "units", "whole")

    def __init__(self, capacity: int) -> None:
        self.flags = np.zeros(capacity, dtype=np.uint8)
        self.times = np.zeros((capacity, 3))  # start_s, end_s, output_units
        self.tokens = np.zeros((capacity, 2), dtype=np.int64)  # prompt, output
        self.operations: list[str | None] = [None] * capacity
        self.tasks: list[str | None] = [None] * capacity
        self.units: list[str | None] = [None] * capacity
        self.attributes: list[Mapping[str, str] | None] = [None] * capacity
        self.whole: dict[int, RequestInfo] = {}  # rows whose info the columns cannot hold

    def _lists(self) -> tuple[_Texts, _Texts, _Texts, list[Mapping[str, str] | None]]:
        """The four lists: operations, tasks, units, attributes."""
        return self.operations, self.tasks, self.units, self.attributes

    def grow(self, n: int) -> None:
        """``n`` more rows, empty (zeros from calloc: untouched pages until taken)."""
        old = self.flags.size
        for name in ("flags", "times", "tokens"):
            column = getattr(self, name)
            grown = np.zeros((old + n, *column.shape[1:]), dtype=column.dtype)
            grown[:old] = column
            setattr(self, name, grown)
        for values in self._lists():
            values.extend([None] * n)

    def clean(self, slots: list[int]) -> None:
        """Rows ``slots`` hold no info."""
        self.flags[slots] = 0
        (ops, tasks, units, attributes), whole = self._lists(), self.whole
        for slot in slots:
            ops[slot] = tasks[slot] = units[slot] = attributes[slot] = None
            if whole:
                whole.pop(slot, None)

    def put(self, slot: int, info: RequestInfo | None) -> None:
        """Row ``slot``'s info is ``info`` (None: none)."""
        self.put_many([slot], [info])

    def put_many(self, slots: list[int], infos: Sequence[RequestInfo | None]) -> None:
        """Row ``slots[i]``'s info is ``infos[i]``, each (distinct rows); an info the columns cannot
        hold (a count beyond 64 bits) is kept whole, its neighbours in the columns."""
        try:
            self._write(slots, infos)
        except (OverflowError, TypeError, ValueError):
            for slot, info in zip(slots, infos, strict=True):
                try:
                    self._write([slot], [info])
                except (OverflowError, TypeError, ValueError):
                    self.flags[slot] = 0
                    assert info is not None  # None always fits
                    self.whole[slot] = info

    def _write(self, slots: list[int], infos: Sequence[RequestInfo | None]) -> None:
        """:meth:`put_many`; raises (the numbers not written) where a value does not fit a column."""
        if self.whole:
            for slot in slots:
                self.whole.pop(slot, None)
        if any(info is None for info in infos):  # rows told they have none: cleaned, the others written
            self.clean([slot for slot, info in zip(slots, infos, strict=True) if info is None])
            slots = [slot for slot, info in zip(slots, infos, strict=True) if info is not None]
            infos = [info for info in infos if info is not None]
        if not infos:
            return
        starts, ends, made, prompts, outputs, exact, op, task, unit, attrs = zip(
            *map(_FIELDS, infos), strict=True
        )
        flags = np.full(len(infos), _HAS, dtype=np.uint8)
        flags[np.asarray(exact, dtype=bool)] |= _EXACT
        times = np.column_stack([_times(starts, flags, _START), _times(ends, flags, _END), made])
        counts = np.array([prompts, outputs], dtype=np.int64).T
        at = np.asarray(slots, dtype=np.int64)  # once, not a list converted for each column
        self.flags[at], self.times[at], self.tokens[at] = flags, times, counts
        ops, tasks, units, attributes = self._lists()
        for slot, o, t, u, a in zip(slots, op, task, unit, attrs, strict=True):
            ops[slot], tasks[slot], units[slot], attributes[slot] = o, t, u, a

    def get(self, slot: int, request_id: str, model: str | None) -> RequestInfo | None:
        """Row ``slot``'s info (``model``: the table's model column; None: "unknown"), or None."""
        return self.get_many([slot], [request_id], [model])[0]

    def get_many(
        self, slots: list[int], request_ids: list[str], models: list[str | None]
    ) -> list[RequestInfo | None]:
        """The info of each row of ``slots``, built again (None where a row has none)."""
        if not slots:
            return []
        f = self.fields(slots, models)
        out: list[RequestInfo | None] = list(
            map(
                RequestInfo,  # positional: RequestInfo's field order
                request_ids,
                ["unknown" if m is None else m for m in f.model] if None in f.model else f.model,
                *f[1:],
            )
        )
        at = np.asarray(slots, dtype=np.int64)
        for k in np.flatnonzero(self.flags[at] == 0).tolist():  # no info in the columns
            out[k] = self.whole.get(slots[k])
        return out

    def fields(self, slots: list[int], models: list[str | None]) -> InfoFields:
        """The infos of rows ``slots`` as lists, one item a row: ``models`` (the table's model column)
        and the columns' fields; a row with no info has a default ``RequestInfo``'s."""
        at = np.asarray(slots, dtype=np.int64)
        flags = self.flags[at]
        times, tokens = self.times[at], self.tokens[at]
        pick = itemgetter(*slots) if len(slots) > 1 else lambda values: tuple(values[k] for k in slots)
        out = InfoFields(
            list(models),
            list(pick(self.operations)),
            list(pick(self.tasks)),
            _optional(times[:, 0], flags & _START),
            _optional(times[:, 1], flags & _END),
            tokens[:, 0].tolist(),
            tokens[:, 1].tolist(),
            times[:, 2].tolist(),
            list(pick(self.units)),
            list(pick(self.attributes)),
            ((flags & _EXACT) != 0).tolist(),
        )
        for k in np.flatnonzero(flags == 0).tolist():  # none, or kept whole
            info = self.whole.get(slots[k], _NO_INFO)
            columns: tuple[list[Any], ...] = out[1:]
            for column, value in zip(columns, _FIELDS_IN_ORDER(info), strict=True):
                column[k] = value
        return out

    def ends(self, at: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Of rows ``at``: whether each states an end, and the end (NaN where none)."""
        flags = self.flags[at]
        stated = (flags & _END) != 0
        end_s = np.where(stated, self.times[at, 1], np.nan)
        if self.whole:
            for i, slot in enumerate(at.tolist()):
                info = self.whole.get(slot)
                if info is not None:
                    stated[i] = info.end_s is not None
                    end_s[i] = np.nan if info.end_s is None else info.end_s
        return stated, end_s
