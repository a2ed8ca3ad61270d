"""A sealed tick's rows into the request table: the batch look-ups and sums give what the plain ones do.

``LiveCodes`` (code -> row as sorted arrays) against the dict it mirrors, through any order of
adds, runs and removals; ``stable_order`` against NumPy's stable sort of the codes; the table's
group sums against ``np.add.reduceat``; ``one_model`` against the models' list.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from sidecar.attribution.events import RequestInfo
from sidecar.attribution.groups import group_rows, stable_order
from sidecar.attribution.live_codes import LiveCodes
from sidecar.attribution.requests import RequestTable
from sidecar.attribution.rules import Split

_op = st.one_of(
    st.tuples(st.just("add"), st.integers(1, 3)),  # skip ahead by this much, one code
    st.tuples(st.just("run"), st.integers(0, 40)),  # a run of this many codes
    st.tuples(st.just("remove"), st.integers(0, 30)),  # this many live codes end
)


@settings(max_examples=300, deadline=None)
@given(ops=st.lists(_op, max_size=40), seed=st.integers(0, 2**16))
def test_live_codes_answer_as_the_dict_they_mirror(ops: list[tuple[str, int]], seed: int) -> None:
    rng = np.random.default_rng(seed)
    live, mirror = LiveCodes(capacity=4), {}
    next_code, next_slot = 0, 0
    for op, k in ops:
        if op == "add":
            next_code += k - 1
            live.add(next_code, next_slot)
            mirror[next_code] = next_slot
            next_code, next_slot = next_code + 1, next_slot + 1
        elif op == "run":
            slots = list(range(next_slot, next_slot + k))
            live.add_run(next_code, slots)
            mirror.update(zip(range(next_code, next_code + k), slots, strict=True))
            next_code, next_slot = next_code + k, next_slot + k
        else:
            gone = [int(c) for c in rng.permutation(list(mirror))[:k]]
            live.remove(gone)
            for code in gone:
                del mirror[code]
        assert len(live) == len(mirror)
        asked = rng.integers(-2, next_code + 3, size=25)
        want = [mirror.get(int(c), -1) for c in asked]
        assert live.slots_of(asked).tolist() == want
        assert live.slots_of(asked.astype(np.float64)).tolist() == want  # the hook's codes are floats


def test_live_codes_refuse_a_code_that_does_not_increase() -> None:
    live = LiveCodes()
    live.add(5, 0)
    with pytest.raises(ValueError, match="codes must increase"):
        live.add(5, 1)
    with pytest.raises(ValueError, match="codes must increase"):
        live.add_run(3, [1, 2])


@settings(max_examples=200, deadline=None)
@given(
    codes=st.lists(st.integers(0, 200), max_size=300),
    base=st.sampled_from([0, 1, 65_000, 2**40]),
    spread=st.sampled_from([1, 300, 65_535, 65_536, 100_000, 10**6]),
    floats=st.booleans(),
)
@example(codes=[200, 0, 100], base=0, spread=65_536, floats=False)  # 65,536 apart: not 16-bit keys
@example(codes=[200, 0, 100], base=0, spread=65_535, floats=False)  # 65,535 apart: 16-bit keys
def test_stable_order_is_numpys_stable_sort(codes: list[int], base: int, spread: int, floats: bool) -> None:
    arr = base + np.asarray(codes, dtype=np.int64) * spread // 200  # spans below and above 2**16
    if floats:
        arr = arr.astype(np.float64)
    assert stable_order(arr).tolist() == np.argsort(arr, kind="stable").tolist()


def _table(n: int, models: list[str]) -> RequestTable:
    table = RequestTable()
    table.add_new([RequestInfo(f"r{i}", model=models[i % len(models)], end_s=1e9) for i in range(n)])
    return table


@settings(max_examples=100, deadline=None)
@given(req=st.lists(st.integers(0, 30), min_size=1, max_size=200), seed=st.integers(0, 2**16))
def test_group_sums_are_reduceats_sums(req: list[int], seed: int) -> None:
    rng = np.random.default_rng(seed)
    codes = np.asarray(req, dtype=np.int64)
    rows = codes.size
    split = Split(rng.random(rows), 0.0, rng.random((rows, 6)), rng.random((rows, 6)), rng.random(rows))
    table = _table(31, ["m"])
    t0 = rng.random(rows)
    slots = table.add_energy(codes, rng.integers(0, 3, rows), split, rng.random(rows), t0, t0 + 1.0)
    g = group_rows(codes)
    assert split.component_j is not None and split.work is not None
    cols = table.columns(slots.tolist())
    for got, rows_j in ((cols.component_j, split.component_j), (cols.work, split.work)):
        want = np.add.reduceat(rows_j[g.order], g.starts, axis=0)
        np.testing.assert_allclose(got, want, rtol=1e-12, atol=0.0)


def test_one_model_names_the_model_all_rows_share_and_none_otherwise() -> None:
    one, two = _table(6, ["m"]), _table(6, ["m", "n"])
    rows = np.arange(6)
    assert one.one_model(rows) == "m"
    assert two.one_model(rows) is None
    assert two.one_model(np.array([0, 2, 4])) == "m"
    assert one.one_model(np.array([0, -1])) is None  # a row gone: the look-up by name decides
    unknown = RequestTable()
    unknown.add_new([RequestInfo("u", model="unknown", end_s=1.0)])
    assert unknown.one_model(np.array([0])) is None  # no model named: the default's, decided elsewhere
    assert one.one_model(np.zeros(0, dtype=np.int64)) is None
