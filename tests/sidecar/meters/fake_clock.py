"""A clock the test moves by hand: meters read it, nothing sleeps."""

from __future__ import annotations


class FakeClock:
    """Monotonic seconds that change only when the test calls :meth:`advance` or sets ``t``."""

    def __init__(self, t: float = 1000.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t

    def advance(self, dt_s: float) -> None:
        self.t += dt_s
