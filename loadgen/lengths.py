"""Token-length distributions: lognormals fitted to the study's published statistics.

The study publishes, per task, a mean output length and pooled p50/p90 (and
sometimes p99) *ranges* across models, plus a cap (``max_output_tokens``).
We model the length as ``min(round(X), cap)`` with ``X ~ LogNormal(mu, sigma)``
and fit ``(mu, sigma)`` by least squares in log space over every statistic
that was published:

    loss(mu, sigma) = sum_s (ln model_s(mu, sigma) - ln target_s)^2

where ``model_s`` is the statistic of the *clipped* variable: the mean is
``E[min(X, c)] = e^(mu + sigma^2/2) Phi((ln c - mu - sigma^2)/sigma) + c (1 - Phi((ln c - mu)/sigma))``
and a quantile is ``min(e^(mu + z_q sigma), c)``. A range target uses its
geometric midpoint (the statistic is multiplicative across models). A lognormal
always has mean > median, so where the published pooled numbers contradict
that (Problem Solving: mean 6,988, p50 range 6,000-11,300) the fit is a
compromise; :attr:`LengthFit.residuals` reports how far each statistic landed.

The fit is a coarse grid over (mu, sigma) refined twice around the best point:
deterministic, numpy only, about 10 ms per distribution.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.typing import NDArray

__all__ = ["LengthFit", "fit_lognormal", "targets_from_yaml"]

# standard-normal quantiles of the published percentiles
_Z = {"p50": 0.0, "p90": 1.2815515655446004, "p99": 2.3263478740408408}


def _phi(x: NDArray[np.float64]) -> NDArray[np.float64]:
    """Standard normal CDF, elementwise (numpy has no erf)."""
    erf = np.frompyfunc(math.erf, 1, 1)
    return np.asarray(0.5 * (1.0 + erf(x / math.sqrt(2.0))), dtype=np.float64)


def clipped_mean(mu: Any, sigma: Any, cap: float) -> Any:
    """``E[min(X, cap)]`` for ``X ~ LogNormal(mu, sigma)`` (arrays broadcast)."""
    mu_a = np.asarray(mu, dtype=np.float64)
    s_a = np.asarray(sigma, dtype=np.float64)
    lc = math.log(cap)
    below = np.exp(mu_a + s_a**2 / 2) * _phi((lc - mu_a - s_a**2) / s_a)
    return below + cap * (1.0 - _phi((lc - mu_a) / s_a))


def targets_from_yaml(stats: Mapping[str, Any]) -> dict[str, float]:
    """Published statistics (``mean``/``p50``/``p90``/``p99`` or their ``*_range``) -> targets in tokens.

    A range ``[lo, hi]`` becomes ``sqrt(lo * hi)``; a non-numeric value ("up to the
    cap") is not a target. ``mean`` wins over ``mean_range`` when both exist.
    """
    out: dict[str, float] = {}
    for name in ("mean", "p50", "p90", "p99"):
        value = stats.get(name)
        rng = stats.get(f"{name}_range")
        if isinstance(value, int | float) and not isinstance(value, bool):
            out[name] = float(value)
        elif isinstance(rng, list | tuple) and len(rng) == 2:
            out[name] = math.sqrt(float(rng[0]) * float(rng[1]))
    return out


@dataclass(frozen=True, slots=True)
class LengthFit:
    """A clipped, rounded lognormal length distribution (tokens).

    ``residuals`` maps each fitted statistic to ``model / target`` (1.0 = exact).
    """

    mu: float
    sigma: float
    cap: int
    minimum: int = 1
    targets: dict[str, float] = field(default_factory=dict)
    residuals: dict[str, float] = field(default_factory=dict)

    def sample(self, rng: np.random.Generator, n: int) -> NDArray[np.int64]:
        """``n`` lengths in ``[minimum, cap]``."""
        x = rng.lognormal(self.mu, self.sigma, size=n)
        return np.clip(np.rint(x), self.minimum, self.cap).astype(np.int64)

    def mean(self) -> float:
        """Mean of the clipped distribution (tokens, before rounding)."""
        return float(clipped_mean(self.mu, self.sigma, float(self.cap)))

    def quantile(self, q: float) -> float:
        """The ``q`` quantile (0 < q < 1) of the clipped distribution, in tokens."""
        z = _inverse_phi(q)
        return float(min(math.exp(self.mu + z * self.sigma), self.cap))

    def scaled(self, factor: float, cap: int | None = None) -> LengthFit:
        """The same shape with every length multiplied by ``factor`` (and a new cap, if given).

        Multiplying a lognormal by ``factor`` adds ``ln factor`` to ``mu``.
        """
        new_cap = cap if cap is not None else max(self.minimum, round(self.cap * factor))
        return LengthFit(
            mu=self.mu + math.log(factor),
            sigma=self.sigma,
            cap=max(self.minimum, new_cap),
            minimum=self.minimum,
            targets={k: v * factor for k, v in self.targets.items()},
            residuals=dict(self.residuals),
        )

    def describe(self) -> dict[str, Any]:
        """Parameters, targets and fitted statistics, for results.json."""
        return {
            "distribution": "lognormal, rounded, clipped to [minimum, cap]",
            "mu": self.mu,
            "sigma": self.sigma,
            "cap": self.cap,
            "minimum": self.minimum,
            "targets": self.targets,
            "fitted": {"mean": self.mean(), "p50": self.quantile(0.5), "p90": self.quantile(0.9)},
            "residuals": self.residuals,
        }


def _inverse_phi(q: float) -> float:
    """Standard-normal quantile by bisection (exact enough for plotting and tests)."""
    lo, hi = -10.0, 10.0
    for _ in range(80):
        mid = (lo + hi) / 2
        if 0.5 * (1 + math.erf(mid / math.sqrt(2))) < q:
            lo = mid
        else:
            hi = mid
    return (lo + hi) / 2


def _loss(
    mu: NDArray[np.float64], sigma: NDArray[np.float64], targets: Mapping[str, float], cap: float
) -> NDArray[np.float64]:
    loss = np.zeros(np.broadcast(mu, sigma).shape)
    lc = math.log(cap)
    for name, target in targets.items():
        if name == "mean":
            model = np.log(np.maximum(clipped_mean(mu, sigma, cap), 1e-300))
        else:
            model = np.minimum(mu + _Z[name] * sigma, lc)
        loss = loss + (model - math.log(target)) ** 2
    return loss


def fit_lognormal(targets: Mapping[str, float], cap: int, minimum: int = 1) -> LengthFit:
    """Fit ``min(LogNormal(mu, sigma), cap)`` to the target statistics (see the module docstring).

    ``targets`` needs at least one of ``mean``/``p50``; with a single statistic
    the shape ``sigma`` is taken as 0.8 (a typical chat-output spread).
    """
    t = {k: float(v) for k, v in targets.items() if k in ("mean", "p50", "p90", "p99")}
    if not t or ("mean" not in t and "p50" not in t):
        raise ValueError(f"need a mean or p50 to fit a length distribution, got {dict(targets)}")
    if any(v <= 0 for v in t.values()):
        raise ValueError(f"length statistics must be > 0, got {t}")
    centre = math.log(t.get("p50", t.get("mean", 1.0)))
    if len(t) == 1:
        sigma0 = 0.8
        mu0 = centre if "p50" in t else math.log(t["mean"]) - sigma0**2 / 2
        best_mu, best_sigma = mu0, sigma0
    else:
        mu_lo, mu_hi, s_lo, s_hi = centre - 3.0, centre + 1.0, 0.02, 3.0
        best_mu, best_sigma = centre, 0.8
        for _ in range(3):
            mus = np.linspace(mu_lo, mu_hi, 121)
            sigmas = np.linspace(s_lo, s_hi, 121)
            m_grid, s_grid = np.meshgrid(mus, sigmas, indexing="ij")
            loss = _loss(m_grid, s_grid, t, float(cap))
            i, j = np.unravel_index(int(np.argmin(loss)), loss.shape)
            best_mu, best_sigma = float(mus[i]), float(sigmas[j])
            d_mu, d_s = (mu_hi - mu_lo) / 20, (s_hi - s_lo) / 20
            mu_lo, mu_hi = best_mu - d_mu, best_mu + d_mu
            s_lo, s_hi = max(0.01, best_sigma - d_s), best_sigma + d_s
    fit = LengthFit(mu=best_mu, sigma=best_sigma, cap=int(cap), minimum=minimum, targets=t)
    residuals = {}
    for name, target in t.items():
        model = fit.mean() if name == "mean" else fit.quantile({"p50": 0.5, "p90": 0.9, "p99": 0.99}[name])
        residuals[name] = model / target
    return LengthFit(
        mu=best_mu, sigma=best_sigma, cap=int(cap), minimum=minimum, targets=t, residuals=residuals
    )
