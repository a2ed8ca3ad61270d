"""Build timelines with edges exactly where a test wants them."""

from __future__ import annotations

from collections.abc import Sequence

from sidecar.meters.base import DeviceInfo, Reading
from sidecar.timeline import Timeline

GPU = DeviceInfo("GPU-test-0", "test GPU")


def timeline_with_edges(edges: Sequence[tuple[float, float]], *, base_j: float = 100.0) -> Timeline:
    """A one-GPU timeline whose counter edges fall at the given (t_s, cumulative J) points.

    Polls come in pairs 10 ms either side of each edge time, so the detected
    edge (the midpoint) is exactly the asked time.
    """
    tl = Timeline([GPU])
    t_first = edges[0][0]
    tl.add(Reading(t_first - 0.02, (base_j - 1.0,)))
    for t, energy in edges:
        tl.add(Reading(t - 0.01, (base_j + _prev(tl),)))
        tl.add(Reading(t + 0.01, (base_j + energy,)))
    return tl


def _prev(tl: Timeline) -> float:
    return float(tl.energy_j[0]) - 1.0
