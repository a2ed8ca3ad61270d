"""A tick cut out of work rows: step shares that stay finite whatever a row's length."""

from __future__ import annotations

import numpy as np
import pytest

from sidecar.attribution.tick import EventArrays, cut_tick


def rows(t1_s: list[float], steps: list[float], timed: float = 0.0) -> EventArrays:
    n = len(t1_s)
    ones = np.ones(n)
    return EventArrays(np.arange(n), ones.astype(int), np.zeros(n), np.array(t1_s), ones, np.array(steps),
                       ones * 8.0, np.full(n, timed))  # fmt: skip


@pytest.mark.parametrize("timed", [0.0, -1.0])  # spread evenly; clocked (no curve known: evenly too)
def test_a_row_too_short_for_its_time_share_gives_no_nan_step_share(timed: float) -> None:
    """A row of 5e-324 s beside a row of the whole tick: its time share rounds to 0 and its steps
    over its length overflowed to inf (0 x inf: NaN into the fit). Its share is now 0 of a time it
    never had, not NaN."""
    tick = cut_tick(rows([1.0, 5e-324], [3.0, 1.0], timed), 0.0, 1.0, 1.0)
    assert np.all(np.isfinite(tick.step_share))
    assert tick.step_share.tolist() == pytest.approx([3.0, 0.0])


def test_step_shares_are_the_steps_times_the_time_share_over_the_rows_length() -> None:
    tick = cut_tick(rows([1.0, 0.5, 0.0], [4.0, 2.0, 5.0]), 0.0, 1.0, 1.0)  # the last: an instant
    # [0, 0.5] shared by two: each 0.25 s; [0.5, 1] the first's alone
    assert tick.time_share.tolist() == pytest.approx([0.75, 0.25, 0.0])
    assert tick.step_share.tolist() == pytest.approx([4.0 * 0.75, 2.0 * 0.25 / 0.5, 5.0])
