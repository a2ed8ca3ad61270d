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

from collections.abc import Mapping

import numpy as np

from sidecar.attribution.events import RequestInfo

__all__ = ["InfoColumns"]

_HAS, _START, _END, _EXACT = 1, 2, 4, 8  # flag bits; 0: no info in the columns
_Texts = list[str | None]


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

    def put_many(self, slots: list[int], infos: list[RequestInfo | None]) -> None:
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

    def _write(self, slots: list[int], infos: list[RequestInfo | None]) -> None:
        """:meth:`put_many`; raises (the numbers not written) where a value does not fit a column."""
        flags: list[int] = []
        times: list[tuple[float, float, float]] = []
        tokens: list[tuple[int, int]] = []
        (ops, tasks, units, attributes), whole = self._lists(), self.whole
        for slot, info in zip(slots, infos, strict=True):
            if whole:
                whole.pop(slot, None)
            if info is None:
                flags.append(0)
                times.append((0.0, 0.0, 0.0))
                tokens.append((0, 0))
                ops[slot] = tasks[slot] = units[slot] = attributes[slot] = None
                continue
            start, end = info.start_s, info.end_s
            flags.append(_HAS | (start is not None) << 1 | (end is not None) << 2 | bool(info.exact) << 3)
            times.append((0.0 if start is None else start, 0.0 if end is None else end, info.output_units))
            tokens.append((info.prompt_tokens, info.output_tokens))
            ops[slot], tasks[slot] = info.operation, info.task
            units[slot], attributes[slot] = info.unit, info.attributes
        counts = np.array(tokens, dtype=np.int64).reshape(-1, 2)
        values = np.array(times, dtype=np.float64).reshape(-1, 3)
        self.flags[slots] = flags
        self.times[slots] = values
        self.tokens[slots] = counts

    def get(self, slot: int, request_id: str, model: str | None) -> RequestInfo | None:
        """Row ``slot``'s info (``model``: the table's model column; None: "unknown"), or None."""
        return self.get_many([slot], [request_id], [model])[0]

    def get_many(
        self, slots: list[int], request_ids: list[str], models: list[str | None]
    ) -> list[RequestInfo | None]:
        """The info of each row of ``slots``, built again (None where a row has none)."""
        at = np.asarray(slots, dtype=np.int64)
        flags: list[int] = self.flags[at].tolist()
        times: list[list[float]] = self.times[at].tolist()
        tokens: list[list[int]] = self.tokens[at].tolist()
        (ops, tasks, units, attributes), whole = self._lists(), self.whole
        out: list[RequestInfo | None] = []
        for slot, rid, model, f, (start, end, output_units), (prompt, output) in zip(
            slots, request_ids, models, flags, times, tokens, strict=True
        ):
            if not f:
                out.append(whole.get(slot) if whole else None)
                continue
            out.append(
                RequestInfo(  # positional: RequestInfo's field order
                    rid,
                    "unknown" if model is None else model,
                    ops[slot],  # set with the flags
                    tasks[slot],
                    start if f & _START else None,
                    end if f & _END else None,
                    prompt,
                    output,
                    output_units,
                    units[slot],
                    attributes[slot],
                    bool(f & _EXACT),
                )
            )
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
