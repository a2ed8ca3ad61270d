"""What a split rule gives for one tick (:class:`Split`) and what a rule is (:class:`SplitRule`);
the rules themselves: :mod:`.rules` (the fitted one) and :mod:`.simple_rules`."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np

from sidecar.attribution.tick import TickWork

__all__ = ["COMPONENTS", "Split", "SplitRule"]

COMPONENTS = ("floor", "step", "prefill", "decode", "context", "denoise")  # context: both phases


@dataclass(frozen=True, slots=True)
class Split:
    """Per-event energies (J) of one tick, the idle part (J), and optional model components (J)."""

    row_j: np.ndarray
    idle_j: float
    component_j: np.ndarray | None = None  # rows x len(COMPONENTS), scaled like row_j
    work: np.ndarray | None = None  # rows x len(fit.WORK): the regressors, scaled like row_j
    unexplained_j: np.ndarray | None = None  # per row: energy the scaling to the measurement moved


class SplitRule(Protocol):
    name: str

    @property
    def ready(self) -> bool:
        """False while the rule is still learning; the attributor then holds busy ticks."""
        ...

    def observe(self, tick: TickWork) -> None:
        """See every sealed tick, idle ones included (for rules that learn)."""
        ...

    def split(self, tick: TickWork) -> Split:
        """Share a busy tick's energy."""
        ...

    def interval_j(
        self, energy_j: float, work: np.ndarray, unexplained_j: float
    ) -> tuple[float, float] | None:
        """An estimated ~95 % interval around a request's energy (None where the rule has none)."""
        ...

    def intervals_j(
        self, energy_j: np.ndarray, work: np.ndarray, unexplained_j: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray] | None:
        """:meth:`interval_j` of many requests (one row of ``work`` each): the same bounds, at once."""
        ...

    def quality(self) -> str:
        """How trustworthy the rule's split is right now ("" for rules that do not learn)."""
        ...
