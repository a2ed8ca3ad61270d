"""A final record's JSON text for the ledger: orjson, with json.dumps's text where they differ.

What the ledger needs is that ``json.loads`` of the text gives the same values as
``json.loads(json.dumps(rec.to_json()))`` (the API, set_tasks and a restart read it back that
way), and that a record ``json.dumps`` refuses is refused (``TypeError``/``ValueError``, the
ledger then counts and skips it). orjson (C, about 5x cheaper here) writes the same values for
the types a record holds (str, int, float, bool, None, dicts with str keys); it differs in
what it does with the rest, so those go to ``json.dumps``'s own encoder, made once:

- a non-finite float: orjson writes ``null``, json ``NaN``/``Infinity`` (read back as such);
  only a text with more ``null`` in it than the record's optional fields that are ``None``
  (start/end times, bounds, J per unit) is searched for one;
- what orjson refuses (an int beyond 64 bits, a float subclass such as ``numpy.float64``, a
  non-str key, a lone surrogate, a value that contains itself): json writes or refuses it
  as before;
- a ``datetime`` or dataclass, which orjson would write and json refuses: passed to a
  ``default`` that refuses it, so json refuses it too.

Non-ASCII text is written as UTF-8 rather than ``\\u`` escapes; ``json.loads`` reads both
the same.
"""

from __future__ import annotations

import json
import json.encoder
from collections.abc import Iterable
from math import isfinite as _isfinite
from operator import itemgetter
from typing import Any

import orjson

from sidecar.attribution.record_batch import Values, per_unit_j, values_of
from sidecar.attribution.records import RECORD_FIELDS, RequestEnergy

__all__ = ["record_json", "values_json"]

_SEPARATORS = (",", ":")
_SCALARS = frozenset((str, int, bool))
_KEYS = (*RECORD_FIELDS, "joules_per_output_unit")
_optional = itemgetter(  # their values: None is written null
    *(RECORD_FIELDS.index(n) for n in ("start_s", "end_s", "end_unix_s", "energy_low_j", "energy_high_j"))
)
_OPTIONS = orjson.OPT_PASSTHROUGH_DATACLASS | orjson.OPT_PASSTHROUGH_DATETIME
_encoder = json.JSONEncoder(separators=_SEPARATORS)
# json.dumps(..., separators=(",", ":")): ensure_ascii, allow_nan, no indent, keys in order
_make_c: Any = getattr(
    json.encoder, "c_make_encoder", None
)  # untyped in typeshed; None without the accelerator
_encode_c: Any = (
    None
    if _make_c is None
    else _make_c(
        None, _encoder.default, json.encoder.encode_basestring_ascii, None, ":", ",", False, False, True
    )
)


def _refuse(value: object) -> None:
    raise TypeError(f"Object of type {type(value).__name__} is not JSON serializable")


def record_json(rec: RequestEnergy) -> str:
    """JSON text of ``rec.to_json()``: ``json.loads`` of it equals that of ``json.dumps``'s."""
    return values_json(values_of(rec))


def values_json(values: Values) -> str:
    """:func:`record_json` of a record's field values (a :class:`RecordBatch` row)."""
    per_unit = per_unit_j(values)
    flat = dict(zip(_KEYS, (*values, per_unit), strict=True))
    try:
        raw = orjson.dumps(flat, default=_refuse, option=_OPTIONS)
    except TypeError:  # orjson.JSONEncodeError: json writes or refuses it, see the docstring
        return _json_dumps(flat)
    nulls = raw.count(b"null")
    if nulls and nulls != (*_optional(values), per_unit).count(None) and not _all_finite(flat.values()):
        return _json_dumps(flat)
    return raw.decode()


def _all_finite(values: Iterable[Any]) -> bool:
    """No NaN or infinity among ``values`` and in the dicts and lists in them (orjson wrote
    them, so their depth is bounded and every float is an exact ``float``)."""
    for value in values:
        kind = type(value)
        if kind is float:
            if not _isfinite(value):
                return False
        elif kind in _SCALARS or value is None:
            continue
        elif isinstance(value, dict):
            if not _all_finite(value.values()):
                return False
        elif isinstance(value, (list, tuple)) and not _all_finite(value):
            return False
    return True


def _json_dumps(flat: dict[str, Any]) -> str:
    """``json.dumps(flat, separators=(",", ":"))``, without its per-call set-up."""
    if _encode_c is None:  # a Python without the json C accelerator
        return _encoder.encode(flat)
    try:
        return "".join(_encode_c(flat, 0))
    except RecursionError:  # a value that contains itself: json.dumps's check refuses it
        return json.dumps(flat, separators=_SEPARATORS)
