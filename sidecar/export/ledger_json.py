"""JSON text for the ledger's row of a record: orjson, with json.dumps's text where they differ.

The ledger keeps a record's dicts (phases, components, attributes), and any float its columns
cannot hold (NaN), as JSON text in its row (:mod:`.ledger_rows`). What it needs is that
``json.loads`` of the text gives the same values as ``json.loads(json.dumps(value))``, and
that a value ``json.dumps`` refuses is refused (``TypeError``/``ValueError``, the ledger then
counts and skips the record). orjson (C, about 5x cheaper here) writes the same values for
the types a record holds (str, int, float, bool, None, dicts with str keys); it differs in
what it does with the rest, so those go to ``json.dumps``'s own encoder, made once:

- a non-finite float: orjson writes ``null``, json ``NaN``/``Infinity`` (read back as such);
  only a text with ``null`` in it (a record's dicts hold no ``None``) is searched for one;
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
from typing import Any

import orjson

__all__ = ["json_text"]

_SEPARATORS = (",", ":")
_SCALARS = frozenset((str, int, bool))
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


def json_text(flat: dict[str, Any]) -> str:
    """JSON text of ``flat``: ``json.loads`` of it equals that of ``json.dumps``'s."""
    try:
        raw = orjson.dumps(flat, default=_refuse, option=_OPTIONS)
    except TypeError:  # orjson.JSONEncodeError: json writes or refuses it, see the docstring
        return _json_dumps(flat)
    if b"null" in raw and not _all_finite(flat.values()):
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
