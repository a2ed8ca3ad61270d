"""A final record's JSON text for the ledger, built without the generic encoder's per-key work.

The text is exactly ``json.dumps(rec.to_json(), separators=(",", ":"))``: the keys in
field order, strings escaped by the same C function (``ensure_ascii``), floats by
``float.__repr__``, ``NaN``/``Infinity`` as ``json`` writes them. The keys are a
fixed template; strings that repeat from record to record (model, task, rule, ...)
are escaped once; any value that is not of its field's plain type (a subclass, a
non-finite float, a number where a string belongs) goes through the same encoder as
before, so the text never differs. About a third cheaper per record than
``json.dumps``: the ledger row's largest cost at a flood of finals.
"""

from __future__ import annotations

import json
from json.encoder import encode_basestring_ascii
from typing import Any

from sidecar.attribution.records import RECORD_FIELDS, RequestEnergy

__all__ = ["ENCODER", "record_json"]

ENCODER = json.JSONEncoder(separators=(",", ":"))  # json.dumps(..., separators=(",", ":"))
_FIELDS = (  # the order record_json() writes them in; a new field must be added there too
    "request_id",
    "model",
    "operation",
    "task",
    "unit",
    "energy_j",
    "phase_j",
    "component_j",
    "prompt_tokens",
    "output_tokens",
    "output_units",
    "start_s",
    "end_s",
    "end_unix_s",
    "busy_s",
    "approximate",
    "final",
    "rule",
    "energy_source",
    "attributes",
    "energy_low_j",
    "energy_high_j",
    "fit_quality",
)
if RECORD_FIELDS != _FIELDS:
    raise ImportError(f"record_json writes {_FIELDS}, RequestEnergy has {RECORD_FIELDS}: update record_json")
_TEMPLATE = "{" + ",".join(f'"{name}":%s' for name in (*_FIELDS, "joules_per_output_unit")) + "}"
_REPEATED: dict[str, str] = {}  # escaped text of strings seen in the repeating fields
_MAX_REPEATED = 4096
_float_text = float.__repr__
_int_text = int.__repr__


def _label(value: Any) -> str:
    """A string that repeats (model, operation, task, unit, rule, source, quality), escaped once."""
    if type(value) is not str:
        return ENCODER.encode(value)
    text = _REPEATED.get(value)
    if text is None:
        if len(_REPEATED) >= _MAX_REPEATED:  # hostile task names cannot grow it
            _REPEATED.clear()
        text = _REPEATED[value] = encode_basestring_ascii(value)
    return text


def _number(value: Any) -> str:
    if type(value) is float and value - value == 0.0:  # finite
        return _float_text(value)
    return ENCODER.encode(value)  # None -> null, NaN, Infinity, ints, subclasses: as json writes them


def _count(value: Any) -> str:
    return _int_text(value) if type(value) is int else ENCODER.encode(value)


def _flag(value: Any) -> str:
    return "true" if value is True else "false" if value is False else ENCODER.encode(value)


def record_json(rec: RequestEnergy) -> str:
    """``json.dumps(rec.to_json(), separators=(",", ":"))``, faster (see the module docstring)."""
    rid = rec.request_id
    return _TEMPLATE % (
        encode_basestring_ascii(rid) if type(rid) is str else ENCODER.encode(rid),
        _label(rec.model),
        _label(rec.operation),
        _label(rec.task),
        _label(rec.unit),
        _number(rec.energy_j),
        ENCODER.encode(rec.phase_j),
        ENCODER.encode(rec.component_j),
        _count(rec.prompt_tokens),
        _count(rec.output_tokens),
        _number(rec.output_units),
        _number(rec.start_s),
        _number(rec.end_s),
        _number(rec.end_unix_s),
        _number(rec.busy_s),
        _flag(rec.approximate),
        _flag(rec.final),
        _label(rec.rule),
        _label(rec.energy_source),
        ENCODER.encode(rec.attributes),
        _number(rec.energy_low_j),
        _number(rec.energy_high_j),
        _label(rec.fit_quality),
        _number(rec.joules_per_output_unit),
    )
