"""GridClock dates counter updates on the counter's own regular grid.

The scenario is the measured NVML one (docs/measurements/nvml.md): the counter
updates every 100 ms (±1 ms jitter), the poller reads it every 20 ms dithered
±25 %, so a poll that sees a new value only bounds the update to a window of
about 20 ms. Every test builds the true update times, derives the change
windows a poller would see, and compares GridClock's dates with the truth.
Times in seconds.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest

from sidecar.grid import GridClock

PERIOD_S = 0.1
POLL_S = 0.02
WARMUP = 64  # windows before the fit is judged (GridClock's default recent window)


def dithered_polls(rng: np.random.Generator, end_s: float) -> np.ndarray:
    gaps = POLL_S * rng.uniform(0.75, 1.25, size=int(end_s / (0.75 * POLL_S)) + 2)
    polls = np.concatenate([[0.0], np.cumsum(gaps)])
    return polls[polls <= end_s]


def grid_updates(rng: np.random.Generator, n: int, jitter_s: float = 0.001) -> np.ndarray:
    phase = rng.uniform(0.0, PERIOD_S)
    return phase + PERIOD_S * np.arange(n) + rng.uniform(-jitter_s, jitter_s, size=n)


def change_windows(updates: np.ndarray, polls: np.ndarray) -> list[tuple[float, float, float]]:
    """(lo, hi, true update) for each update a poller sees: lo = last poll before it, hi = first after."""
    idx = np.searchsorted(polls, updates, side="left")
    out = []
    for u, i in zip(updates.tolist(), idx.tolist(), strict=True):
        if 0 < i < len(polls):
            out.append((float(polls[i - 1]), float(polls[i]), u))
    return out


def date_all(clock: GridClock, windows: list[tuple[float, float, float]]) -> tuple[np.ndarray, np.ndarray]:
    """GridClock's date and the window midpoint's error against the truth, per window (s)."""
    dated = np.array([clock.date(lo, hi) - u for lo, hi, u in windows])
    mids = np.array([0.5 * (lo + hi) - u for lo, hi, u in windows])
    return np.abs(dated), np.abs(mids)


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_after_warm_up_grid_dates_are_within_about_2_ms_while_midpoints_are_off_by_several(seed: int) -> None:
    rng = np.random.default_rng(seed)
    windows = change_windows(grid_updates(rng, 300), dithered_polls(rng, 31.0))
    clock = GridClock()
    dated_err, mid_err = date_all(clock, windows)
    assert np.median(dated_err[WARMUP:]) < 0.002
    assert np.median(mid_err[WARMUP:]) > 0.003
    assert clock.period_s == pytest.approx(PERIOD_S, abs=2e-4)
    assert clock.on_grid > 0.9 * len(windows)


def test_every_date_lies_in_its_window_or_within_the_jitter_slack() -> None:
    rng = np.random.default_rng(7)
    windows = change_windows(grid_updates(rng, 200), dithered_polls(rng, 21.0))
    clock = GridClock()
    for lo, hi, _ in windows:
        assert lo <= clock.date(lo, hi) <= hi


def test_before_min_windows_the_grid_is_unknown_and_dates_are_midpoints() -> None:
    rng = np.random.default_rng(3)
    windows = change_windows(grid_updates(rng, 15), dithered_polls(rng, 2.0))
    clock = GridClock(min_windows=16)
    dates = [clock.date(lo, hi) for lo, hi, _ in windows]
    assert dates == [0.5 * (lo + hi) for lo, hi, _ in windows]
    assert clock.period_s is None
    assert (clock.on_grid, clock.off_grid) == (0, len(windows))


@pytest.mark.parametrize(
    "draw_gaps",
    [
        pytest.param(lambda rng, n: rng.exponential(0.15, n), id="exponential"),
        pytest.param(lambda rng, n: rng.uniform(0.05, 0.3, n), id="uniform-50-300ms"),
    ],
)
def test_an_irregular_counter_falls_back_to_midpoints(
    draw_gaps: Callable[[np.random.Generator, int], np.ndarray],
) -> None:
    rng = np.random.default_rng(11)
    updates = np.cumsum(draw_gaps(rng, 200))
    windows = change_windows(updates, dithered_polls(rng, float(updates[-1]) + 1.0))
    # two updates inside one poll window are one change, as the timeline sees them
    windows = [w for i, w in enumerate(windows) if i == 0 or w[:2] != windows[i - 1][:2]]
    clock = GridClock()
    dates = [clock.date(lo, hi) for lo, hi, _ in windows]
    assert dates == [0.5 * (lo + hi) for lo, hi, _ in windows]
    assert clock.off_grid == len(windows)
    assert clock.on_grid == 0
    assert clock.period_s is None


def test_a_missing_update_does_not_break_the_grid() -> None:
    """The counter skips an update (unchanged for a whole period), twice: the grid carries on across."""
    rng = np.random.default_rng(5)
    updates = grid_updates(rng, 300)
    skipped = [150, 220]
    windows = change_windows(np.delete(updates, skipped), dithered_polls(rng, 31.0))
    clock = GridClock()
    dated_err, _ = date_all(clock, windows)
    first_after_gap = [u for _, _, u in windows].index(float(updates[skipped[0] + 1]))
    assert dated_err[first_after_gap] < 0.003  # the window after the gap is still dated on the grid
    assert np.median(dated_err[first_after_gap:]) < 0.002
    assert clock.period_s == pytest.approx(PERIOD_S, abs=2e-4)


def test_windows_that_pile_onto_one_grid_point_are_not_a_grid() -> None:
    """Two updates in one period (a burst) cannot be on a 100 ms grid: the fit is dropped."""
    clock = GridClock(min_windows=4)
    for k in range(6):
        clock.date(0.1 * k, 0.1 * k + 0.02)
    assert clock.period_s == pytest.approx(0.1)
    clock.date(0.52, 0.54)  # 20 ms after the last window: 0.2 periods, the same grid point
    assert clock.period_s is None


def test_the_last_update_in_a_long_window_is_on_the_grid() -> None:
    clock = GridClock()
    for k in range(40):  # windows of 20 ms centred on updates at 0.037 + 0.1 k
        clock.date(0.037 + 0.1 * k - 0.01, 0.037 + 0.1 * k + 0.01)
    assert clock.last_update(4.05, 6.01) == pytest.approx(5.937, abs=1e-6)
    assert clock.last_update(4.05, 5.938) == pytest.approx(5.837, abs=1e-6)  # 5.937: seen? the one before
    assert clock.last_update(5.94, 5.99) is None  # no update in it
    assert GridClock().last_update(0.0, 1.0) is None  # no grid yet
