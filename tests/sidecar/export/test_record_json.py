"""The ledger's JSON text of a record is exactly json.dumps of its to_json(), for any field values."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sidecar.attribution.records import RequestEnergy
from sidecar.export.record_json import record_json
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


@settings(max_examples=400, deadline=None)
@given(records())
def test_record_json_is_json_dumps_of_to_json(rec: RequestEnergy) -> None:
    assert record_json(rec) == json.dumps(rec.to_json(), separators=(",", ":"))


def test_numpy_and_subclass_values_are_written_as_json_writes_them() -> None:
    class Label(str):
        pass

    rec = make_record(
        energy_j=np.float64(1.25), model=Label("m"), busy_s=np.float64("inf"), output_tokens=True
    )
    assert record_json(rec) == json.dumps(rec.to_json(), separators=(",", ":"))


def test_a_value_that_contains_itself_is_refused_as_json_dumps_refuses_it() -> None:
    attributes: dict[str, Any] = {}
    attributes["self"] = attributes
    rec = make_record(attributes=attributes)
    with pytest.raises(ValueError, match="Circular"):
        record_json(rec)
