"""Seeded LLM request workloads for the simulated GPU.

A workload is a list of :class:`SimRequest`: when each request arrives
(simulated seconds from 0), how many prompt tokens it brings and how many
output tokens it will generate. Three built-in kinds, drawn uniformly from
inclusive ranges:

=================  ==============  ==============
kind               prompt tokens   output tokens
=================  ==============  ==============
``prefill-heavy``  1000 - 4000     4 - 32
``decode-heavy``   16 - 128        200 - 1000
``mixed``          200 - 1000      50 - 300
=================  ==============  ==============

mixed by configurable weights. Arrivals:

- ``all-at-once``: every request at t = 0 (a saturating batch).
- ``poisson``: exponential inter-arrival times at ``rate_per_s``.
- ``bursts``: groups of ``burst_size`` requests arriving as a Poisson stream
  at ``rate_per_s``; after a burst's last arrival there are ``burst_gap_s``
  seconds without arrivals, so the GPU drains and idles between bursts
  (idle energy exists).

Everything is drawn from one ``numpy.random.Generator(seed)``: the same seed
gives the same workload.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

from sidecar.errors import ConfigError

__all__ = [
    "DECODE_HEAVY",
    "DEFAULT_KINDS",
    "MIXED",
    "PREFILL_HEAVY",
    "Arrivals",
    "RequestKind",
    "SimRequest",
    "WorkloadConfig",
    "generate",
]

Arrivals = Literal["all-at-once", "poisson", "bursts"]


@dataclass(frozen=True, slots=True)
class RequestKind:
    """A request shape: inclusive ranges of prompt and output tokens."""

    name: str
    prompt_tokens: tuple[int, int]
    output_tokens: tuple[int, int]


PREFILL_HEAVY = RequestKind("prefill-heavy", (1000, 4000), (4, 32))
DECODE_HEAVY = RequestKind("decode-heavy", (16, 128), (200, 1000))
MIXED = RequestKind("mixed", (200, 1000), (50, 300))
DEFAULT_KINDS: tuple[RequestKind, ...] = (PREFILL_HEAVY, DECODE_HEAVY, MIXED)


@dataclass(frozen=True, slots=True)
class SimRequest:
    """One simulated request. ``arrival_s`` is simulated seconds from 0."""

    request_id: str
    arrival_s: float
    prompt_tokens: int
    output_tokens: int
    kind: str


@dataclass(frozen=True, slots=True)
class WorkloadConfig:
    """What to generate.

    ``weights`` maps kind names (from ``kinds``) to relative weights; kinds
    left out get weight 0. ``rate_per_s`` is the Poisson arrival rate (for
    ``poisson``, and within a burst for ``bursts``).
    """

    n_requests: int = 300
    weights: tuple[tuple[str, float], ...] = (
        ("prefill-heavy", 1.0),
        ("decode-heavy", 1.0),
        ("mixed", 1.0),
    )
    arrivals: Arrivals = "bursts"
    rate_per_s: float = 8.0
    burst_size: int = 60
    burst_gap_s: float = 20.0
    kinds: tuple[RequestKind, ...] = DEFAULT_KINDS
    start_s: float = 0.0  # idle lead-in before the first arrival (s): a sidecar starts before traffic

    def check(self) -> None:
        """Raise :class:`ConfigError` naming the knob that is invalid."""
        if self.n_requests < 0:
            raise ConfigError(f"workload.n_requests must be >= 0, got {self.n_requests}")
        if self.arrivals not in ("all-at-once", "poisson", "bursts"):
            raise ConfigError(f"workload.arrivals: unknown arrival process {self.arrivals!r}")
        if self.arrivals != "all-at-once" and not self.rate_per_s > 0:
            raise ConfigError(f"workload.rate_per_s must be > 0, got {self.rate_per_s}")
        if self.burst_size < 1:
            raise ConfigError(f"workload.burst_size must be >= 1, got {self.burst_size}")
        if not self.start_s >= 0:
            raise ConfigError(f"workload.start_s must be >= 0, got {self.start_s}")
        if self.burst_gap_s < 0:
            raise ConfigError(f"workload.burst_gap_s must be >= 0, got {self.burst_gap_s}")
        names = {k.name for k in self.kinds}
        for kind in self.kinds:
            for label, (lo, hi) in (("prompt", kind.prompt_tokens), ("output", kind.output_tokens)):
                if not 1 <= lo <= hi:
                    raise ConfigError(f"workload.kinds[{kind.name}]: bad {label} token range ({lo}, {hi})")
        total = 0.0
        for name, weight in self.weights:
            if name not in names:
                raise ConfigError(f"workload.weights: unknown kind {name!r} (known: {sorted(names)})")
            if weight < 0:
                raise ConfigError(f"workload.weights[{name}] must be >= 0, got {weight}")
            total += weight
        if not total > 0:
            raise ConfigError("workload.weights: at least one kind needs a positive weight")


def generate(config: WorkloadConfig, rng: np.random.Generator) -> list[SimRequest]:
    """Draw ``config.n_requests`` requests, sorted by arrival time."""
    config.check()
    n = config.n_requests
    by_name = {k.name: k for k in config.kinds}
    names = [name for name, _ in config.weights]
    w = np.array([weight for _, weight in config.weights], dtype=float)
    choice = rng.choice(len(names), size=n, p=w / w.sum())
    arrival_s = _arrivals(config, rng)
    requests = []
    for i in range(n):
        kind = by_name[names[int(choice[i])]]
        prompt = int(rng.integers(kind.prompt_tokens[0], kind.prompt_tokens[1], endpoint=True))
        output = int(rng.integers(kind.output_tokens[0], kind.output_tokens[1], endpoint=True))
        requests.append(SimRequest(f"sim-{i:05d}", float(arrival_s[i]), prompt, output, kind.name))
    return requests


def _arrivals(config: WorkloadConfig, rng: np.random.Generator) -> np.ndarray:
    """Arrival times in seconds, non-decreasing, the first at or after 0."""
    n = config.n_requests
    if config.arrivals == "all-at-once" or n == 0:
        return np.full(n, config.start_s)
    gaps = rng.exponential(1.0 / config.rate_per_s, size=n)
    gaps[0] = 0.0
    if config.arrivals == "bursts":
        gaps[config.burst_size :: config.burst_size] = config.burst_gap_s
    return config.start_s + np.cumsum(gaps)
