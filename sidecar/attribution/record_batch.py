"""Records of one pass as rows of values: a record object is built only where one is asked for.

A pass that finalizes thousands of requests hands them to consumers that read a
batch at a time (histograms, the ledger, the attributor's own counts); building a
frozen :class:`~sidecar.attribution.records.RequestEnergy` for each (~7 us: one
``object.__setattr__`` per field) would cost more than all of them. A
:class:`RecordBatch` keeps each record as a tuple of its field values in
:data:`~sidecar.attribution.records.RECORD_FIELDS` order (:data:`Values`), read by
the index constants below, and is a ``Sequence[RequestEnergy]`` for everything
else: indexing or iterating builds the record objects (once, cached).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from operator import attrgetter
from typing import Any, overload

from sidecar.attribution.records import RECORD_FIELDS, RequestEnergy, per_unit

__all__ = [
    "ATTRIBUTES",
    "ENERGY_J",
    "ENERGY_SOURCE",
    "FINAL",
    "MODEL",
    "OPERATION",
    "OUTPUT_TOKENS",
    "OUTPUT_UNITS",
    "REQUEST_ID",
    "TASK",
    "UNIT",
    "RecordBatch",
    "Values",
    "per_unit_j",
    "record_of",
    "replaced",
    "to_json",
    "values_of",
]

Values = tuple[Any, ...]  # one record's field values, in RECORD_FIELDS order

_AT = {name: k for k, name in enumerate(RECORD_FIELDS)}
REQUEST_ID, MODEL, OPERATION, TASK = _AT["request_id"], _AT["model"], _AT["operation"], _AT["task"]
UNIT = _AT["unit"]
ENERGY_J, OUTPUT_TOKENS, OUTPUT_UNITS = _AT["energy_j"], _AT["output_tokens"], _AT["output_units"]
FINAL, ATTRIBUTES, ENERGY_SOURCE = _AT["final"], _AT["attributes"], _AT["energy_source"]
_DICTS = tuple(_AT[n] for n in ("phase_j", "component_j", "attributes"))

values_of: Any = attrgetter(*RECORD_FIELDS)  # RequestEnergy -> Values
# each slot's own setter: a frozen dataclass's __init__ goes through object.__setattr__ per field
_SETTERS = tuple(getattr(RequestEnergy, name).__set__ for name in RECORD_FIELDS)


def record_of(values: Values) -> RequestEnergy:
    """The record with these field values (what ``RequestEnergy(*values)`` makes, ~4x cheaper)."""
    rec: RequestEnergy = object.__new__(RequestEnergy)
    for put, value in zip(_SETTERS, values, strict=True):
        put(rec, value)
    return rec


def per_unit_j(values: Values) -> float | None:
    """:attr:`RequestEnergy.joules_per_output_unit` of a record's values."""
    return per_unit(values[ENERGY_J], values[OUTPUT_UNITS])


def to_json(values: Values) -> dict[str, Any]:
    """:meth:`RequestEnergy.to_json` of a record's values (the dicts copied, as it copies them)."""
    out = dict(zip(RECORD_FIELDS, values, strict=True))
    for k in _DICTS:
        name = RECORD_FIELDS[k]
        out[name] = dict(out[name])
    out["joules_per_output_unit"] = per_unit_j(values)
    return out


def replaced(values: Values, field: str, value: Any) -> Values:
    """The values with one field replaced (``dataclasses.replace`` of the record)."""
    k = _AT[field]
    return (*values[:k], value, *values[k + 1 :])


class RecordBatch(Sequence[RequestEnergy]):
    """Records as rows of values (:attr:`values`); a ``Sequence`` of :class:`RequestEnergy` too."""

    __slots__ = ("_records", "values")

    def __init__(self, values: list[Values] | None = None) -> None:
        self.values: list[Values] = [] if values is None else values
        self._records: list[RequestEnergy] | None = None

    @staticmethod
    def of(records: Iterable[RequestEnergy]) -> RecordBatch:
        """The batch of some records (their values read once; a batch is returned as it is)."""
        if isinstance(records, RecordBatch):
            return records
        recs = list(records)
        batch = RecordBatch([values_of(r) for r in recs])
        batch._records = recs
        return batch

    def records(self) -> list[RequestEnergy]:
        """The record objects (built on the first call)."""
        if self._records is None:
            self._records = [record_of(v) for v in self.values]
        return self._records

    def __len__(self) -> int:
        return len(self.values)

    @overload
    def __getitem__(self, index: int) -> RequestEnergy: ...

    @overload
    def __getitem__(self, index: slice) -> list[RequestEnergy]: ...

    def __getitem__(self, index: int | slice) -> RequestEnergy | list[RequestEnergy]:
        if self._records is None and isinstance(index, int):
            return record_of(self.values[index])
        return self.records()[index]

    def __iter__(self) -> Iterator[RequestEnergy]:
        return iter(self.records())

    def __add__(self, other: Sequence[RequestEnergy]) -> RecordBatch:
        return RecordBatch(self.values + RecordBatch.of(other).values)

    def __eq__(self, other: object) -> bool:
        """Equal to any sequence (a list, say) of equal records, in the same order."""
        if not isinstance(other, Sequence) or isinstance(other, str | bytes):
            return NotImplemented
        return len(other) == len(self) and list(self) == list(other)

    __hash__ = None  # type: ignore[assignment]  # mutable, compared by value

    def __repr__(self) -> str:
        return f"RecordBatch({self.records()!r})"
