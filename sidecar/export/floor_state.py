"""The idle floor kept across restarts, in the ledger's ``state`` table.

A sidecar restarted under load sees no idle tick for a while; without its
last measured floor the fit would have to fit the floor too (not identifiable
when saturated). :class:`FloorKeeper` restores the floor saved by the previous
run of the same devices and saves the current estimate every ``every_s``
seconds and at stop. Units: W, s.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable

from sidecar.attribution.floor import FloorEstimate, FloorState
from sidecar.export.store import Ledger

__all__ = ["FloorKeeper"]

log = logging.getLogger(__name__)
_KEY = "idle_floor"
RETRY_S = 5.0  # a save the ledger refused is tried again this long after


class FloorKeeper:
    """Restores and saves a :class:`FloorEstimate` through a :class:`Ledger`."""

    def __init__(
        self,
        floor: FloorEstimate,
        ledger: Ledger,
        *,
        every_s: float = 60.0,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self.floor = floor
        self.ledger = ledger
        self.every_s = every_s
        self.wall = wall
        self._saved_at: float | None = None
        self._failed_at: float | None = None  # the last save, if the ledger refused it (RETRY_S)

    def restore(self, now_s: float) -> bool:
        """Seed the floor from the saved state of the same devices; True if it applied."""
        raw = self.ledger.load_state(_KEY)
        if raw is None:
            return False
        try:
            state = FloorState(
                devices=str(raw["devices"]),
                power_w=float(raw["power_w"]),
                observed_unix_s=float(raw["observed_unix_s"]),
                samples=int(raw["samples"]),
            )
        except (KeyError, TypeError, ValueError) as err:
            log.warning("ignoring a saved idle floor that does not parse: %s", err)
            return False
        if not math.isfinite(state.observed_unix_s):
            return False
        applied = self.floor.restore(state, now_s, self.wall())
        if applied:
            log.info(
                "idle floor restored: %.1f W measured %.0f s ago",
                state.power_w,
                self.wall() - state.observed_unix_s,
            )
        return applied

    def save(self, now_s: float, *, force: bool = False) -> bool:
        """Save the current estimate (at most every ``every_s`` unless ``force``); True if saved."""
        if not force and self._saved_at is not None and now_s - self._saved_at < self.every_s:
            return False
        if not force and self._failed_at is not None and now_s - self._failed_at < RETRY_S:
            return False  # a locked file costs its busy timeout per try: not every tick
        state = self.floor.state(now_s, self.wall())
        if state is None:
            return False
        saved = self.ledger.save_state(
            _KEY,
            {
                "devices": state.devices,
                "power_w": state.power_w,
                "observed_unix_s": state.observed_unix_s,
                "samples": state.samples,
            },
        )
        if not saved:
            self._failed_at = now_s
            return False
        self._saved_at, self._failed_at = now_s, None
        return True

    @property
    def failed(self) -> bool:
        """Whether the last save tried was refused."""
        return self._failed_at is not None
