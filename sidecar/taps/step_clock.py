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
observed / predicted count. Its cumulative steps (:meth:`steps_at_many`) are
the curve by which sealing cuts a span's decode at each tick
(:mod:`sidecar.attribution.step_curve`); :meth:`segments` cuts one window into
pieces whose share of the count follows ``r`` (the one-request reference,
:func:`~sidecar.taps.span_work.phase_events`).

Cost, so a span flood stays cheap: the fit is warm-started from the last one
(``warm_iterations``) and redone when asked (:meth:`fit`: the span handler
fits once per batch of spans), or by :meth:`segments` itself only once a
quarter more windows than it saw have arrived, so each window costs O(1)
fitting on average; time the fit has not seen yet runs at its mean rate. A
window longer than ``horizon_s`` is not observed (a forged one-day decode made
every later fit span a day of bins). :meth:`segments` cuts at the bin edges
inside a window (or, with ``max_pieces``, into that many equal-time pieces);
adjacent pieces whose rates differ by less than ``merge_tol`` are joined, so a
steady rate gives few pieces. Units: s, steps.
"""

from __future__ import annotations

import math

import numpy as np

__all__ = ["StepClock"]


class StepClock:
    """A shared step-rate estimate from (window, count) observations."""

    def __init__(
        self,
        bin_s: float = 0.05,
        horizon_s: float = 300.0,
        iterations: int = 100,
        *,
        warm_iterations: int = 10,
        max_pieces: int | None = None,
        merge_tol: float = 0.05,
    ) -> None:
        self.bin_s = bin_s
        self.horizon_s = horizon_s
        self.iterations = iterations  # for the first fit
        self.warm_iterations = warm_iterations  # for each later fit, started from the last
        self.max_pieces = max_pieces  # None: one piece per bin
        self.merge_tol = merge_tol
        self._windows = _Windows(max_windows=20_000)  # t0, t1, count: the last 20,000 within the horizon
        self._unfitted = 0  # windows observed since the last fit
        self._start = 0  # first bin of the fit
        self._rate = np.zeros(0)  # steps/s per bin from _start on
        self._cum = np.zeros(1)  # steps from the fit's start to each bin edge
        self._mean = 0.0  # steps/s outside the fitted bins

    def observe(self, t0_s: float, t1_s: float, count: float) -> None:
        """A window with ``count`` steps in it (a request's decode: first to last token)."""
        finite = math.isfinite(t0_s) and math.isfinite(t1_s)
        if not (finite and 0 < t1_s - t0_s <= self.horizon_s and count >= 0):  # longer: not observed
            return
        self._windows.append(t0_s, t1_s, count, self.horizon_s)
        self._unfitted += 1

    def segments(self, t0_s: float, t1_s: float) -> list[tuple[float, float, float]]:
        """``[(a_s, b_s, share)]`` covering ``[t0_s, t1_s]``; shares sum to 1 and follow the step rate."""
        if not t1_s > t0_s or len(self._windows) < 2:
            return [(t0_s, t1_s, 1.0)]
        if self._unfitted >= max(1, (len(self._windows) - self._unfitted) // 4):
            self._fit()
        edges = self._edges(t0_s, t1_s)
        cum = self.steps_at_many(np.asarray(edges)).tolist()
        total = cum[-1] - cum[0]
        if not total > 0:
            return [(t0_s, t1_s, 1.0)]
        pieces = [(edges[0], edges[1], (cum[1] - cum[0]) / total)]
        tol = self.merge_tol
        for k in range(1, len(edges) - 1):
            a, b, share = edges[k], edges[k + 1], (cum[k + 1] - cum[k]) / total
            pa, pb, ps = pieces[-1]
            rate_last, rate = ps / (pb - pa), share / (b - a)
            if abs(rate - rate_last) <= tol * max(rate, rate_last):  # the same rate: one piece
                pieces[-1] = (pa, b, ps + share)
            else:
                pieces.append((a, b, share))
        return pieces

    def observe_many(self, t0_s: np.ndarray, t1_s: np.ndarray, count: np.ndarray) -> None:
        """:meth:`observe` of many windows (those it would skip are skipped)."""
        with np.errstate(invalid="ignore"):
            length_s = t1_s - t0_s
            ok = np.isfinite(length_s) & (length_s > 0) & (length_s <= self.horizon_s) & (count >= 0)
        if not ok.any():
            return
        self._windows.extend(np.column_stack([t0_s[ok], t1_s[ok], count[ok]]), self.horizon_s)
        self._unfitted += int(ok.sum())

    def steps_at_many(self, t_s: np.ndarray) -> np.ndarray:
        """Steps from the fit's start to each time, as fitted now (the mean rate outside the fitted
        bins): the curve sealing cuts a span's decode by (:mod:`sidecar.attribution.step_curve`)."""
        cum = self._cum
        n = cum.size - 1
        x = t_s / self.bin_s - self._start  # in bins from the fit's start
        inside = np.clip(x, 0.0, n)
        out: np.ndarray = (x - inside) * (self.bin_s * self._mean)  # outside the bins: the mean rate
        if n:  # the bin a time is in, by index (a grid of equal bins): ~15x np.interp's time for 20,000
            with np.errstate(invalid="ignore"):  # NaN: any index, clipped, NaN out
                k = np.minimum(inside, n - 1).astype(np.intp)
            np.clip(k, 0, n - 1, out=k)
            lo = cum[k]
            out += lo + (inside - k) * (cum[k + 1] - lo)
        return out

    def fit(self) -> None:
        """Refit now if windows arrived since the last fit (a span handler: once per batch of spans)."""
        if self._unfitted:
            self._fit()

    def _edges(self, t0_s: float, t1_s: float) -> list[float]:
        """Piece edges: every bin edge inside, or ``max_pieces`` equal-time pieces."""
        lo, hi = math.floor(t0_s / self.bin_s) + 1, math.ceil(t1_s / self.bin_s)
        if self.max_pieces is None or hi - lo + 1 <= self.max_pieces:
            inner = (k * self.bin_s for k in range(lo, hi))  # float division may put one on t0_s or t1_s
            return [t0_s, *(t for t in inner if t0_s < t < t1_s), t1_s]
        step = (t1_s - t0_s) / self.max_pieces
        return [t0_s + k * step for k in range(self.max_pieces)] + [t1_s]

    def _fit(self) -> None:
        """Refit the rate over every window kept (warm-started from the last fit)."""
        w = self._windows.array()
        b0 = np.floor(w[:, 0] / self.bin_s).astype(np.int64)
        b1 = np.floor(w[:, 1] / self.bin_s).astype(np.int64) + 1  # exclusive
        start, stop = int(b0.min()), int(b1.max())
        mean = float(w[:, 2].sum() / max(float((w[:, 1] - w[:, 0]).sum()), 1e-9))
        rate = np.full(stop - start, mean)
        lo, hi = max(start, self._start), min(stop, self._start + self._rate.size)
        warm = hi > lo
        if warm:
            rate[lo - start : hi - start] = self._rate[lo - self._start : hi - self._start]
        rate = _multiplicative_updates(
            rate,
            b0 - start,
            b1 - start,
            w[:, 2],
            self.bin_s,
            self.warm_iterations if warm else self.iterations,
        )
        self._start, self._rate, self._mean = start, rate, mean
        self._cum = np.concatenate([[0.0], np.cumsum(rate * self.bin_s)])
        self._unfitted = 0


class _Windows:
    """(t0, t1, count) rows, in arrival order, as one array (a fit reads them all, every drain): at most
    ``max_windows``, and none that ended over a horizon before the newest one's end (wherever it
    came: a short window from hours back arriving after recent ones was kept, trimmed only as a
    leading run, and every fit spanned hours of bins)."""

    def __init__(self, max_windows: int) -> None:
        self.max_windows = max_windows
        self._rows = np.zeros((0, 3))
        self._new: list[tuple[float, float, float]] = []  # appended one by one, not yet in _rows
        self._oldest_s = math.inf  # the earliest end held

    def __len__(self) -> int:
        return len(self._rows) + len(self._new)

    def append(self, t0_s: float, t1_s: float, count: float, horizon_s: float) -> None:
        self._new.append((t0_s, t1_s, count))
        self._oldest_s = min(self._oldest_s, t1_s)
        full = len(self._new) >= 1024 or len(self) > self.max_windows
        if full or self.oldest_end_s() < t1_s - horizon_s:  # merge, and trim as the deque did
            self.extend(np.zeros((0, 3)), horizon_s)

    def extend(self, rows: np.ndarray, horizon_s: float) -> None:
        parts = [self._rows, np.asarray(self._new, dtype=np.float64).reshape(-1, 3), rows]
        self._new = []
        rows = np.concatenate(parts)[-self.max_windows :]
        if len(rows):  # those that ended over the horizon before the latest end dropped
            rows = rows[rows[:, 1] >= float(rows[:, 1].max()) - horizon_s]
        self._rows = rows
        self._oldest_s = float(rows[:, 1].min()) if len(rows) else math.inf

    def oldest_end_s(self) -> float:
        return self._oldest_s

    def array(self) -> np.ndarray:
        if self._new:
            self.extend(np.zeros((0, 3)), math.inf)
        return self._rows


def _multiplicative_updates(
    rate: np.ndarray, b0: np.ndarray, b1: np.ndarray, count: np.ndarray, bin_s: float, iterations: int
) -> np.ndarray:
    """Richardson-Lucy: scale each bin by the mean observed/predicted ratio of the windows covering it."""
    n_bins = rate.size
    covered = np.cumsum(np.bincount(b0, minlength=n_bins + 1) - np.bincount(b1, minlength=n_bins + 1))[
        :n_bins
    ]
    has = covered > 0
    for _ in range(iterations):
        cum = np.concatenate([[0.0], np.cumsum(rate * bin_s)])
        predicted = cum[b1] - cum[b0]
        ratio = np.where(predicted > 0, count / np.where(predicted > 0, predicted, 1.0), 1.0)
        acc = np.bincount(b0, ratio, minlength=n_bins + 1) - np.bincount(b1, ratio, minlength=n_bins + 1)
        factor = np.cumsum(acc)[:n_bins]
        rate = np.where(has, rate * factor / np.where(has, covered, 1.0), rate)
    return rate
