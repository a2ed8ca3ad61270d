"""Cumulative prompt and generation tokens the vLLM plugin reported, by wall time.

The sidecar compares them with vLLM's own /metrics counters (the same tokens counted
twice, independently). Each iteration adds a point ``(wall_s, prompt, generation)``, dated
no earlier than the one before (one stale datagram dated an hour back, put first, made every
later look-up bisect unsorted times: 700 generated tokens read where 300 had been); the last
``most`` points are kept. Units: Unix seconds, tokens.
"""

from __future__ import annotations

from bisect import bisect_right
from collections import deque

__all__ = ["TokenHistory"]

_HISTORY = 4096  # points kept for the /metrics comparison


class TokenHistory:
    """Running token totals and the last points, to answer "how many by then"."""

    __slots__ = ("_generation", "_points", "_prompt", "started_wall_s")

    def __init__(self, most: int = _HISTORY) -> None:
        self._points: deque[tuple[float, int, int]] = deque(maxlen=most)
        self._prompt = 0  # computed + cached prompt tokens
        self._generation = 0
        self.started_wall_s: float | None = None  # Unix time the receiver started listening

    def add(self, wall_s: float, prompt_tokens: int, generation_tokens: int) -> None:
        """One iteration's tokens, recorded at ``wall_s``."""
        self._prompt += prompt_tokens
        self._generation += generation_tokens
        if self._points:  # in time order, as until() bisects them: one dated back counts as the last
            wall_s = max(wall_s, self._points[-1][0])
        self._points.append((wall_s, self._prompt, self._generation))

    def until(self, unix_s: float) -> tuple[int, int] | None:
        """Cumulative (prompt, generation) tokens of iterations recorded by ``unix_s``, if known."""
        if self.started_wall_s is None or unix_s < self.started_wall_s:
            return None
        points = self._points
        if not points or unix_s < points[0][0]:
            return 0, 0
        i = bisect_right([p[0] for p in points], unix_s) - 1
        return points[i][1], points[i][2]
