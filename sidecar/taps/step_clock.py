"""The engine's step rate over time, recovered from whole-request spans.

A span tells how many decode tokens a request made between its first and last
token, not when. But in continuous batching every running request advances
one token per engine step, so all requests share one step clock: request i's
decode count is the number of steps in its window, ``n_i = ∫ r(t) dt`` over
``[first_i, last_i]``, with ``r(t)`` the step rate. Steps are slower while long
prefill chunks run, so spreading each request's tokens uniformly over its own
window puts decode tokens where prefill really ran, and biases the fitted model
(the fitted prefill cost comes out low).

:class:`StepClock` estimates ``r(t)`` on a grid of ``bin_s`` from every
window seen in the last ``horizon_s``, by multiplicative updates (the
Richardson-Lucy / EM iteration for a non-negative rate from interval counts):
each bin's rate is scaled by the mean, over the windows covering it, of
observed / predicted count. :meth:`segments` then cuts a window into per-bin
pieces whose share of the count follows ``r``. Units: s, steps.
"""

from __future__ import annotations

import math
from collections import deque

import numpy as np

__all__ = ["StepClock"]


class StepClock:
    """A shared step-rate estimate from (window, count) observations."""

    def __init__(self, bin_s: float = 0.05, horizon_s: float = 300.0, iterations: int = 100) -> None:
        self.bin_s = bin_s
        self.horizon_s = horizon_s
        self.iterations = iterations
        self._windows: deque[tuple[float, float, float]] = deque(maxlen=20_000)  # t0, t1, count

    def observe(self, t0_s: float, t1_s: float, count: float) -> None:
        """A window with ``count`` steps in it (a request's decode: first to last token)."""
        if not (math.isfinite(t0_s) and math.isfinite(t1_s) and t1_s > t0_s and count >= 0):
            return
        self._windows.append((t0_s, t1_s, count))
        while self._windows and self._windows[0][1] < t1_s - self.horizon_s:
            self._windows.popleft()

    def segments(self, t0_s: float, t1_s: float) -> list[tuple[float, float, float]]:
        """``[(a_s, b_s, share)]`` covering ``[t0_s, t1_s]``; shares sum to 1 and follow the step rate."""
        if not t1_s > t0_s:
            return [(t0_s, t1_s, 1.0)]
        lo, hi = self._bin(t0_s), self._bin(t1_s) + 1
        related = [w for w in self._windows if w[1] > t0_s and w[0] < t1_s]
        if len(related) < 2:
            return [(t0_s, t1_s, 1.0)]
        start = min(lo, min(self._bin(w[0]) for w in related))
        stop = max(hi, max(self._bin(w[1]) + 1 for w in related))
        rate = self._rate(related, start, stop)
        edges = np.arange(lo, hi + 1) * self.bin_s
        edges[0], edges[-1] = t0_s, t1_s
        weight = rate[lo - start : hi - start] * np.diff(edges)
        total = float(weight.sum())
        if not total > 0:
            return [(t0_s, t1_s, 1.0)]
        share = weight / total
        return [
            (float(a), float(b), float(s))
            for a, b, s in zip(edges[:-1], edges[1:], share, strict=True)
            if b > a
        ]

    def _bin(self, t_s: float) -> int:
        return math.floor(t_s / self.bin_s)

    def _rate(self, windows: list[tuple[float, float, float]], start: int, stop: int) -> np.ndarray:
        """Step rate per bin in ``[start, stop)`` (steps/s), by multiplicative updates."""
        b0 = np.array([self._bin(w[0]) for w in windows]) - start
        b1 = np.array([self._bin(w[1]) for w in windows]) - start + 1  # exclusive
        count = np.array([w[2] for w in windows])
        n_bins = stop - start
        cover = np.zeros(n_bins + 1)
        np.add.at(cover, b0, 1.0)
        np.add.at(cover, b1, -1.0)
        covered = np.cumsum(cover)[:n_bins]
        mean_rate = float(count.sum() / max(sum(w[1] - w[0] for w in windows), 1e-9))
        rate = np.full(n_bins, mean_rate)
        for _ in range(self.iterations):
            cum = np.concatenate([[0.0], np.cumsum(rate * self.bin_s)])
            predicted = cum[b1] - cum[b0]
            ratio = np.where(predicted > 0, count / np.where(predicted > 0, predicted, 1.0), 1.0)
            acc = np.zeros(n_bins + 1)
            np.add.at(acc, b0, ratio)
            np.add.at(acc, b1, -ratio)
            factor = np.cumsum(acc)[:n_bins]
            rate = np.where(covered > 0, rate * factor / np.where(covered > 0, covered, 1.0), rate)
        return rate
