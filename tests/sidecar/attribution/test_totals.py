"""Throughput per watt over a sliding window, kept as running sums, equals a recount of the window."""

from __future__ import annotations

import numpy as np
import pytest

from sidecar.attribution.totals import Totals


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
