"""Throughput per watt over a sliding window, kept as running sums, equals a recount of the window."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sidecar.attribution.totals import OTHER, Names, Totals


def recount(events: list[tuple[str, float, str, float]], now_s: float, window_s: float) -> dict[str, float]:
    active: dict[str, float] = {}
    idle = 0.0
    units: dict[str, float] = {}
    for kind, t, model, x in events:
        if t < now_s - window_s:
            continue
        if kind == "units":
            units[model] = units.get(model, 0.0) + x
        elif model:
            active[model] = active.get(model, 0.0) + x
        else:
            idle += x
    total = sum(active.values())
    out = {}
    for model, n in units.items():
        energy = active.get(model, 0.0) + (idle * active.get(model, 0.0) / total if total > 0 else 0.0)
        if energy > 0:
            out[model] = n / energy
    return out


@pytest.mark.parametrize("seed", range(5))
def test_throughput_per_watt_equals_a_recount_of_the_window_as_time_goes_on(seed: int) -> None:
    rng = np.random.default_rng(seed)
    totals = Totals(1, tpw_window_s=5.0)
    events: list[tuple[str, float, str, float]] = []
    t = 0.0
    for _ in range(400):
        t += float(rng.uniform(0.0, 0.2))
        model = str(rng.choice(["a", "b"]))
        kind = str(rng.choice(["energy", "idle", "units"]))
        x = float(rng.uniform(0.1, 50.0))
        if kind == "energy":
            totals.add_model_energy(t, model, "decode", x)
            events.append(("energy", t, model, x))
        elif kind == "idle":
            totals.add_tick(t, x, x, np.array([x]))
            events.append(("energy", t, "", x))
        else:
            totals.add_output(t, model, "token", x)
            events.append(("units", t, model, x))
        got = totals.throughput_per_watt(t)
        want = recount(events, t, 5.0)
        assert got.keys() == want.keys()
        assert all(got[m] == pytest.approx(want[m], rel=1e-9) for m in want)
    assert totals.throughput_per_watt(t + 100.0) == {}  # everything left the window


def test_a_pass_of_finals_keeps_one_window_entry_per_model_and_the_same_throughput() -> None:
    totals = Totals(1, tpw_window_s=5.0)
    events: list[tuple[str, float, str, float]] = []
    for t in (1.0, 2.0, 3.0):
        totals.add_model_energy(t, "a", "decode", 10.0)
        events.append(("energy", t, "a", 10.0))
        for model, units in (("a", 3.0), ("a", 4.0), ("b", 1.0), ("a", 2.0)):  # b between two a runs
            totals.add_output(t, model, "token", units)
            events.append(("units", t, model, units))
    assert len(totals._units_window) == 3 * 3  # a, b, a per pass, not one per record
    assert totals.output_units[("a", "token")] == 27.0
    for now in (3.0, 6.5, 7.5, 9.0):
        assert totals.throughput_per_watt(now) == pytest.approx(recount(events, now, 5.0), rel=1e-12)


def test_the_windows_stay_bounded_when_nothing_reads_them() -> None:
    """No scrape for an hour of 10 ticks a second: the windows hold the last window's entries,
    not every tick's, and the throughput read afterwards is the recount of that window."""
    totals = Totals(1, tpw_window_s=5.0)
    events: list[tuple[str, float, str, float]] = []
    for k in range(36_000):
        t = k * 0.1
        totals.add_tick(t, 3.0, 1.0, np.array([1.0]))
        totals.add_model_energy(t, "a", "decode", 2.0)
        totals.add_output(t, "a", "token", 5.0)
        events += [("energy", t, "", 1.0), ("energy", t, "a", 2.0), ("units", t, "a", 5.0)]
    assert len(totals._energy_window) <= 2 * 52  # idle and "a" per tick, 5 s of 0.1 s ticks
    assert len(totals._units_window) <= 52
    now = 35_999 * 0.1
    assert totals.throughput_per_watt(now) == pytest.approx(recount(events[-3 * 60 :], now, 5.0), rel=1e-9)


def test_names_keep_the_first_ones_then_read_other_and_count_each_use() -> None:
    names = Names(3, first=("served",))
    assert [names(n) for n in ("a", "served", "b", "c", "a", "c")] == ["a", "served", "b", OTHER, "a", OTHER]
    assert names.folded == 2


def test_model_names_from_clients_cannot_grow_the_totals_and_no_joule_is_lost() -> None:
    """A client naming a new model in every request (a forged span, a proxied body): the totals keep
    the sidecar's model and the first others, the rest under "other", and add up to the same J."""
    totals = Totals(1, max_models=4, model="served")
    for k in range(10_000):
        t = k * 0.1
        totals.add_tick(t, 3.0, 0.0, np.array([0.0]))
        totals.add_model_energy(t, f"forged-{k}", "decode", 2.0)
        totals.add_model_energy(t, "served", "decode", 1.0)
        totals.add_output(t, f"forged-{k}", f"unit-{k}", 5.0)
    models = {m for m, _ in totals.phase_energy_j} | {m for m, _ in totals.output_units}
    assert models == {"served", "forged-0", "forged-1", "forged-2", OTHER}
    assert {u for _, u in totals.output_units} <= {"unit-0", "unit-1", "unit-2", "unit-3", "unit-4", OTHER}
    assert sum(totals.phase_energy_j.values()) == pytest.approx(30_000.0, rel=1e-12)
    assert totals.phase_energy_j[("served", "decode")] == pytest.approx(10_000.0, rel=1e-12)
    assert sum(totals.output_units.values()) == pytest.approx(50_000.0, rel=1e-12)
    assert totals.conservation_error_j == pytest.approx(0.0, abs=1e-6)
    assert totals.labels_folded == (10_000 - 3) * 2 + (10_000 - 5)  # energy and output adds; units
    assert set(totals.throughput_per_watt(999.9)) <= models


@settings(max_examples=200, deadline=None)
@given(
    passes=st.lists(
        st.lists(
            st.tuples(st.sampled_from(["served", "a", "b", "c", "d"]), st.sampled_from(["token", "u", "v"])),
            max_size=12,
        ),
        max_size=6,
    ),
    units=st.integers(1, 900),
)
def test_a_pass_added_at_once_is_each_record_added_in_turn(
    passes: list[list[tuple[str, str]]], units: int
) -> None:
    """``add_outputs`` (the finalize pass's way) leaves the totals, their throughput and the folded
    count as ``add_output`` of each record in turn would; the names' sets fill (and fold) on the way."""
    at_once, each = (Totals(1, tpw_window_s=5.0, max_models=3, model="served") for _ in range(2))
    for k, records in enumerate(passes):
        t = 1.0 + k
        items = [(model, unit, float(units + i)) for i, (model, unit) in enumerate(records)]
        for total in (at_once, each):
            total.add_model_energy(t, "served", "decode", 10.0)
        at_once.add_outputs(t, iter(items))
        for model, unit, x in items:
            each.add_output(t, model, unit, x)
        assert at_once.output_units == each.output_units
        assert at_once.labels_folded == each.labels_folded
        assert at_once.throughput_per_watt(t) == pytest.approx(each.throughput_per_watt(t), rel=1e-12)
