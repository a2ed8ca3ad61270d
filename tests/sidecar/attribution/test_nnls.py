"""The NumPy NNLS against SciPy's on the problems the fit poses and on harder ones."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.optimize import nnls as scipy_nnls

from sidecar.attribution.nnls import nnls


def _problem(rng: np.random.Generator, rows: int, cols: int, ridge: float) -> tuple[np.ndarray, np.ndarray]:
    """A random design with some columns inert or shared, and a target with negative pulls."""
    x = rng.gamma(2.0, 1.0, size=(rows, cols)) * (rng.random(cols) < 0.8)
    if cols > 2:
        x[:, -1] = x[:, 0] * 0.5 + rng.normal(0, 1e-3, rows)  # nearly collinear pair
    truth = rng.normal(0.5, 1.0, cols)  # some negative: the bound is active there
    y = x @ truth + rng.normal(0, 0.1, rows)
    lam = np.sqrt(ridge * rows)
    return np.vstack([x, lam * np.eye(cols)]), np.concatenate([y, np.zeros(cols)])


@pytest.mark.parametrize("ridge", [1e-6, 0.0])
@pytest.mark.parametrize("cols", [1, 2, 4, 7])
def test_agrees_with_scipy(cols: int, ridge: float) -> None:
    rng = np.random.default_rng(cols * 100 + int(ridge == 0))
    for _ in range(200):
        a, b = _problem(rng, int(rng.integers(cols, 80)), cols, ridge)
        want, want_norm = scipy_nnls(a, b, maxiter=50 * cols)
        got, got_norm = nnls(a, b, max_iter=50 * cols)
        assert (got >= 0).all()
        assert got_norm == pytest.approx(want_norm, rel=1e-7, abs=1e-9)
        if ridge:  # full column rank: the solution is unique
            np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-8)


def test_known_solutions() -> None:
    a = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    x, norm = nnls(a, np.array([2.0, -1.0, 1.0]))
    np.testing.assert_allclose(x, [1.5, 0.0])  # the second would be negative: held at zero
    assert norm == pytest.approx(np.linalg.norm(a @ x - [2.0, -1.0, 1.0]))
    x, norm = nnls(np.eye(3), np.array([1.0, 2.0, 3.0]))
    np.testing.assert_allclose(x, [1.0, 2.0, 3.0])
    assert norm == pytest.approx(0.0, abs=1e-12)
    x, _ = nnls(np.zeros((4, 2)), np.ones(4))  # nothing to fit: zero
    np.testing.assert_array_equal(x, [0.0, 0.0])
    x, _ = nnls(-np.ones((3, 1)), np.ones(3))  # every pull negative: zero
    np.testing.assert_array_equal(x, [0.0])


def test_a_target_at_float_noise_stops_at_the_point_reached_instead_of_raising() -> None:
    """Adversarial probe: a column chosen for a gradient over the tolerance solved to under it (busy
    power equal to the floor); the passive set went empty and the next step's minimum over no
    coefficients raised ValueError, inside the fitted rule's refit, so inside the tick."""
    a = np.full((75, 2), 1.0075)
    b = np.full(75, 7.9581e-13)
    x, residual = nnls(a, b, max_iter=100)
    assert (x >= 0).all() and residual == pytest.approx(float(np.linalg.norm(b)), rel=1e-6)
