"""InfoColumns: an info taken apart into the request table's columns comes back as it went in."""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from sidecar.attribution.events import RequestInfo
from sidecar.attribution.info_columns import InfoColumns, InfoFields
from sidecar.attribution.requests import RequestTable

_time = st.one_of(st.none(), st.floats(allow_nan=False), st.just(math.inf))
_count = st.one_of(st.integers(0, 2**40), st.just(2**63 - 1), st.just(10**30), st.just(-(2**70)))
_info = st.builds(
    RequestInfo,
    st.just("placeholder"),  # the row's id, below
    model=st.sampled_from(["m", "unknown"]),
    operation=st.sampled_from(["chat", "image_generation"]),
    task=st.sampled_from(["chat", "unknown", "rag"]),
    start_s=_time,
    end_s=_time,
    prompt_tokens=_count,
    output_tokens=_count,
    output_units=st.floats(allow_nan=False),
    unit=st.sampled_from(["token", "image"]),
    attributes=st.sampled_from([{}, {"trace_id": "t"}]),
    exact=st.booleans(),
)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.one_of(st.none(), _info), min_size=1, max_size=12), st.data())
def test_infos_come_back_as_they_were_put(infos: list[RequestInfo | None], data: st.DataObject) -> None:
    columns = InfoColumns(4)
    columns.grow(16)
    slots = data.draw(st.permutations(range(20)))[: len(infos)]
    ids = [f"r{s}" for s in slots]
    infos = [None if i is None else replace(i, request_id=rid) for i, rid in zip(infos, ids, strict=True)]
    models = [None if i is None or i.model == "unknown" else i.model for i in infos]
    if data.draw(st.booleans()):
        columns.put_many(slots, infos)
    else:
        for slot, info in zip(slots, infos, strict=True):
            columns.put(slot, info)
    back = columns.get_many(slots, ids, models)
    assert back == infos
    for got, info in zip(back, infos, strict=True):  # the tap's own mapping, not a copy
        assert got is None or info is None or got.attributes is info.attributes
    fields = columns.fields(slots, models)  # what the final records read: lists, defaults where none
    for k, info in enumerate(infos):
        want = RequestInfo("") if info is None else info
        got = [column[k] for column in fields[1:]]
        assert got == [getattr(want, name) for name in InfoFields._fields[1:]]
    assert fields.model == models
    stated, end_s = columns.ends(np.array(slots))
    assert stated.tolist() == [i is not None and i.end_s is not None for i in infos]
    want = [math.nan if i is None or i.end_s is None else i.end_s for i in infos]
    np.testing.assert_array_equal(end_s, want)
    columns.clean(slots)
    assert columns.get_many(slots, ids, models) == [None] * len(slots)
    assert not columns.whole


def test_a_count_beyond_64_bits_keeps_that_info_whole_and_its_neighbours_in_columns() -> None:
    columns = InfoColumns(4)
    good = RequestInfo("a", "m", output_tokens=7, end_s=3.0)
    huge = RequestInfo("b", "m", output_tokens=10**30, end_s=4.0)
    columns.put_many([0, 1], [good, huge])
    assert columns.whole == {1: huge}
    assert columns.get_many([0, 1], ["a", "b"], ["m", "m"]) == [good, huge]
    assert columns.ends(np.array([0, 1]))[1].tolist() == [3.0, 4.0]
    columns.put(1, good)  # a later info of the row replaces the whole one
    assert not columns.whole


def test_the_table_gives_back_merged_infos_and_no_info_object_is_kept() -> None:
    table = RequestTable()
    first = RequestInfo("r", "m", task="rag", start_s=1.0, attributes={"a": "1"})
    table.set_info("r", first)
    table.set_info("r", RequestInfo("r", end_s=5.0, output_tokens=3))
    acc = table.get("r")
    assert acc is not None
    assert acc.info == RequestInfo(
        "r", "m", task="rag", start_s=1.0, end_s=5.0, output_tokens=3, attributes={"a": "1"}
    )
    assert acc.info is not acc.info  # built when asked: the table holds columns, not the object
    assert "infos" not in dir(table._sums)


def test_no_rows_read_as_empty_lists() -> None:
    columns = InfoColumns(4)
    assert columns.fields([], []) == InfoFields(*([] for _ in InfoFields._fields))
    assert columns.get_many([], [], []) == []
