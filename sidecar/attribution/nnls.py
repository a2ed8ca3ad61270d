"""Non-negative least squares (Lawson and Hanson's active-set method), in NumPy.

``scipy.optimize.nnls`` solves the same problem with the same method, but importing
``scipy.optimize`` costs the sidecar about 50 MB of resident memory (SciPy's linear
algebra, sparse, special and array-API layers come with it), a third of its whole
footprint (``benchmarks/memory.py``), for a problem of at most seven unknowns. This is
the textbook algorithm (Lawson and Hanson, *Solving Least Squares Problems*, 1974,
ch. 23); ``tests/sidecar/attribution/test_nnls.py`` holds it to SciPy's answers.
"""

from __future__ import annotations

import numpy as np

__all__ = ["nnls"]


def nnls(a: np.ndarray, b: np.ndarray, max_iter: int | None = None) -> tuple[np.ndarray, float]:
    """``argmin_x ||a x - b||_2`` subject to ``x >= 0``: (x, residual norm).

    Stops after ``max_iter`` inner iterations (default ``3 * columns``, as SciPy) with
    the feasible point reached so far; also where rounding empties the passive set (a column
    whose gradient was over the tolerance solved to a value under it: a target at float noise,
    e.g. busy power equal to the floor; the next step took a minimum over no coefficients and
    raised, and the tick with it): no coefficient then moves the residual by more than the
    tolerance, so the point reached is optimal within it.
    """
    a = np.asarray(a, dtype=float)
    b = np.asarray(b, dtype=float)
    _, n = a.shape
    limit = 3 * n if max_iter is None else max_iter
    x = np.zeros(n)
    passive = np.zeros(n, dtype=bool)
    tol = 10.0 * np.finfo(float).eps * max(a.shape) * (np.abs(a).sum(axis=0).max() if a.size else 0.0)
    gradient = a.T @ b
    iterations = 0
    while not passive.all() and iterations < limit:
        candidates = np.where(passive, -np.inf, gradient)
        j = int(np.argmax(candidates))
        if candidates[j] <= tol:
            break  # the Kuhn-Tucker conditions hold: optimal
        passive[j] = True
        while iterations < limit:
            iterations += 1
            s = _solve_on(a, b, passive)
            if s[passive].min() > tol:
                x = s
                break
            # step towards s until the first passive coefficient reaches zero; it leaves the set
            shrinking = passive & (s <= tol)
            gap = x[shrinking] - s[shrinking]  # >= 0; 0 only for a coefficient at zero on both
            alpha = float(np.min(np.divide(x[shrinking], gap, out=np.zeros_like(gap), where=gap > 0)))
            x = x + alpha * (s - x)
            passive &= x > tol
            x[~passive] = 0.0
            if not passive.any():
                return x, float(np.linalg.norm(a @ x - b))
        gradient = a.T @ (b - a @ x)
    return x, float(np.linalg.norm(a @ x - b))


def _solve_on(a: np.ndarray, b: np.ndarray, passive: np.ndarray) -> np.ndarray:
    """Unconstrained least squares on the passive columns; zero elsewhere."""
    s = np.zeros(a.shape[1])
    s[passive] = np.linalg.lstsq(a[:, passive], b, rcond=None)[0]
    return s
