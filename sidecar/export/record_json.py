"""A final record's JSON text for the ledger, with one encoder built once.

The text is exactly ``json.dumps(rec.to_json(), separators=(",", ":"))``. ``json.dumps``
builds a new encoder for every call and :meth:`RequestEnergy.to_json` copies the three
nested maps; here the C encoder ``json.dumps`` itself uses is made once, and the record's
fields go to it in a flat dict of its own values (nothing is changed while encoding). It
skips the circular-reference bookkeeping, so a (never seen) self-containing value is
handed to ``json.dumps``'s own check, which refuses it as before (``ValueError``). Most of
what is left is the C encoder's per-value work (``float.__repr__``).
"""

from __future__ import annotations

import json
import json.encoder
from operator import attrgetter
from typing import Any

from sidecar.attribution.records import RECORD_FIELDS, RequestEnergy

__all__ = ["record_json"]

_SEPARATORS = (",", ":")
_KEYS = (*RECORD_FIELDS, "joules_per_output_unit")
_fields = attrgetter(*RECORD_FIELDS)
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


def record_json(rec: RequestEnergy) -> str:
    """``json.dumps(rec.to_json(), separators=(",", ":"))``, without its per-call set-up."""
    flat = dict(zip(_KEYS, (*_fields(rec), rec.joules_per_output_unit), strict=True))
    if _encode_c is None:  # a Python without the json C accelerator
        return _encoder.encode(flat)
    try:
        return "".join(_encode_c(flat, 0))
    except RecursionError:  # a value that contains itself: json.dumps's check refuses it
        return json.dumps(flat, separators=_SEPARATORS)
