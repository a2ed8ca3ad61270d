"""The ledger's JSON text (orjson, json's text where they differ) reads back as json.dumps's does.

Checked on whole records' ``to_json()`` (every type a record holds, at every depth), though the
ledger writes only a record's dicts this way (:mod:`sidecar.export.ledger_rows`).

"The same values" is checked as ``json.dumps(json.loads(text))``: NaN-safe, and it tells 1 from
1.0 and 0.0 from -0.0. A record json.dumps refuses is refused with the same exception type.
"""

from __future__ import annotations

import datetime
import json
from dataclasses import dataclass
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sidecar.attribution.records import RequestEnergy
from sidecar.export.ledger_json import json_text
from tests.sidecar.export.factories import make_record

text = st.text(max_size=12)  # unicode, quotes, control characters: escaped by json's own function
label = st.sampled_from(["chat", "token", "fitted", "measured", "ok", "", "ünïcode", 'q"uote']) | text
number = st.floats(allow_nan=True, allow_infinity=True) | st.integers(-(10**30), 10**30)
maybe = st.none() | number
float_map = st.dictionaries(text, st.floats(allow_nan=True), max_size=6)


@st.composite
def records(draw: Any) -> RequestEnergy:
    return make_record(
        request_id=draw(text),
        model=draw(label),
        operation=draw(label),
        task=draw(label),
        unit=draw(label),
        energy_j=draw(number),
        phase_j=draw(float_map),
        component_j=draw(float_map),
        prompt_tokens=draw(st.integers(-(10**20), 10**20) | st.booleans()),
        output_tokens=draw(st.integers(0, 10**20)),
        output_units=draw(number),
        start_s=draw(maybe),
        end_s=draw(maybe),
        end_unix_s=draw(maybe),
        busy_s=draw(number),
        approximate=draw(st.booleans()),
        final=draw(st.booleans()),
        rule=draw(label),
        energy_source=draw(label),
        attributes=draw(st.dictionaries(text, text, max_size=4)),
        energy_low_j=draw(maybe),
        energy_high_j=draw(maybe),
        fit_quality=draw(label),
    )


def record_json(rec: RequestEnergy) -> str:
    """The JSON text of a record's ``to_json()``."""
    return json_text(rec.to_json())


def _read_back(text: str) -> str:
    return json.dumps(json.loads(text))


def _assert_same_as_json_dumps(rec: RequestEnergy) -> None:
    try:
        expected = json.dumps(rec.to_json(), separators=(",", ":"))
    except (TypeError, ValueError) as err:
        with pytest.raises(type(err)):
            record_json(rec)
        return
    assert _read_back(record_json(rec)) == _read_back(expected)


@settings(max_examples=400, deadline=None)
@given(records())
def test_json_text_reads_back_as_json_dumps_does(rec: RequestEnergy) -> None:
    _assert_same_as_json_dumps(rec)


@pytest.mark.parametrize(
    "overrides",
    [
        {"energy_j": float("nan")},
        {"busy_s": float("-inf")},
        {"phase_j": {"prefill": float("inf"), "decode": 1.0}},
        {"energy_low_j": float("nan"), "start_s": None},
        {"start_s": None, "end_s": None, "phase_j": {"prefill": float("nan")}},  # a NaN among Nones
        {"start_s": None, "model": "null", "energy_j": float("inf")},
        {"output_units": 0.0, "attributes": {"k": None}, "busy_s": float("nan")},  # J per unit None
        {"prompt_tokens": 2**64},  # beyond orjson's 64 bits, written by json
        {"output_tokens": 2**63 + 1},
        {"phase_j": {1: 2.0}},  # a non-str key: json writes "1"
        {"model": "\ud800x"},  # a lone surrogate: json escapes it
        {"model": "ünïcode ✓", "attributes": {"k": 'q"\n'}},
        {"energy_j": -0.0, "output_units": 0.0},
        {"attributes": {"at": datetime.datetime(2026, 1, 1)}},  # json refuses, so must we
        {"attributes": {"s": {1, 2}}},
    ],
)
def test_values_orjson_writes_otherwise_read_back_as_json_writes_them(overrides: dict[str, Any]) -> None:
    _assert_same_as_json_dumps(make_record(**overrides))


def test_a_dataclass_value_is_refused_as_json_dumps_refuses_it() -> None:
    @dataclass
    class Point:
        x: int

    rec = make_record(attributes={"p": Point(1)})
    with pytest.raises(TypeError):
        json.dumps(rec.to_json())
    with pytest.raises(TypeError):
        record_json(rec)


def test_numpy_and_subclass_values_are_written_as_json_writes_them() -> None:
    class Label(str):
        pass

    rec = make_record(
        energy_j=np.float64(1.25), model=Label("m"), busy_s=np.float64("inf"), output_tokens=True
    )
    _assert_same_as_json_dumps(rec)
    assert json.loads(record_json(rec))["busy_s"] == float("inf")


def test_a_value_that_contains_itself_is_refused_as_json_dumps_refuses_it() -> None:
    attributes: dict[str, Any] = {}
    attributes["self"] = attributes
    rec = make_record(attributes=attributes)
    with pytest.raises(ValueError, match="Circular"):
        record_json(rec)
