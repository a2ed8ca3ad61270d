"""Running totals of sealed energy: by model and phase, idle per device, conservation.

These are what the cumulative metrics show. Everything is in joules; the
throughput-per-watt window is in seconds of sealed time.

A model or unit name can come from a client (a diffusion span's attributes, a proxied
request's body), so the totals keep at most ``max_models`` model names and
:data:`MAX_UNITS` unit names, the first seen (the configured model reserved); any other
is added up under ``other`` (:data:`OTHER`) and counted (:attr:`Totals.labels_folded`).
The records themselves keep their names.
"""

from __future__ import annotations

from collections import defaultdict, deque
from collections.abc import Iterable

import numpy as np

__all__ = ["MAX_MODELS", "MAX_UNITS", "OTHER", "Names", "Totals"]

MAX_MODELS = 64  # model names the totals keep (the max_model_labels knob); more: "other"
MAX_UNITS = 8  # output unit names (token, image, video, ...); more: "other"
OTHER = "other"


class Names:
    """A bounded set of label values: the first ``most`` distinct names keep theirs, any later new
    one reads :data:`OTHER` (each such use counted in ``folded``). ``first``: names held from the
    start (an empty one, e.g. no configured model, is not a name)."""

    __slots__ = ("_known", "folded", "most")

    def __init__(self, most: int, first: tuple[str, ...] = ()) -> None:
        self.most, self.folded = most, 0
        self._known: set[str] = {name for name in first[:most] if name}

    def __call__(self, name: str, uses: int = 1) -> str:
        """The label ``name`` reads as, for ``uses`` additions under it (each folded one counted)."""
        if name in self._known:
            return name
        if len(self._known) < self.most:
            self._known.add(name)
            return name
        self.folded += uses
        return OTHER


class Totals:
    """Cumulative energy accounting over sealed ticks."""

    def __init__(
        self, n_devices: int, *, tpw_window_s: float = 60.0, max_models: int = MAX_MODELS, model: str = ""
    ) -> None:
        self._model = Names(max_models, (model,))  # the configured model always named
        self._unit = Names(MAX_UNITS, ("token", "image", "video"))
        self.measured_j = 0.0  # sum of sealed ticks' measured energy
        self.attributed_j = 0.0  # sum given to requests
        self.idle_j = 0.0  # sum kept as idle
        self.idle_dev_j = np.zeros(n_devices)
        self.phase_energy_j: dict[tuple[str, str], float] = defaultdict(float)
        self.output_units: dict[tuple[str, str], float] = defaultdict(float)
        self.sealed_ticks = 0
        self._tpw_window_s = tpw_window_s
        self._energy_window: deque[tuple[float, str, float]] = deque()  # (t, model or "", J)
        # (t, model, units): one entry per model per finalize pass, so a flood of finals holds few
        self._units_window: deque[tuple[float, str, float]] = deque()
        # the windows' sums per model ("": idle) and entry counts, kept as entries come and go
        self._energy_sum: dict[str, list[float]] = {}  # model -> [J, entries]
        self._units_sum: dict[str, list[float]] = {}  # model -> [units, entries]

    def add_tick(self, t_s: float, measured_j: float, idle_j: float, idle_dev_j: np.ndarray) -> None:
        self.sealed_ticks += 1
        self.measured_j += measured_j
        self.idle_j += idle_j
        self.idle_dev_j += idle_dev_j
        if idle_j > 0:
            _push(self._energy_window, self._energy_sum, (t_s, "", idle_j))
        # the windows end here too, not only when read: unread (nothing scrapes), they would grow a
        # few entries a tick for good
        _trim(self._energy_window, self._energy_sum, t_s - self._tpw_window_s)
        _trim(self._units_window, self._units_sum, t_s - self._tpw_window_s)

    @property
    def labels_folded(self) -> int:
        """Additions whose model or unit name was counted under ``other`` (the name sets were full)."""
        return self._model.folded + self._unit.folded

    def add_model_energy(self, t_s: float, model: str, phase: str, energy_j: float) -> None:
        model = self._model(model)
        self.attributed_j += energy_j
        self.phase_energy_j[(model, phase)] += energy_j
        _push(self._energy_window, self._energy_sum, (t_s, model, energy_j))

    def add_idle_label(self, model: str, idle_j: float) -> None:
        """Idle energy is shown under the server's model with phase ``idle``."""
        model = self._model(model)
        self.phase_energy_j[(model, "idle")] += idle_j

    def add_outputs(self, t_s: float, items: Iterable[tuple[str, str, float]]) -> None:
        """:meth:`add_output` of each (model, unit, units), summed per model and unit first (a
        finalize pass's records: one addition a pair in the order first seen, not one a record)."""
        sums: dict[tuple[str, str], list[float]] = {}
        for model, unit, units in items:
            acc = sums.get((model, unit))
            if acc is None:
                sums[(model, unit)] = [units, 1]
            else:
                acc[0] += units
                acc[1] += 1
        for (model, unit), (units, uses) in sums.items():
            self.add_output(t_s, model, unit, units, int(uses))

    def add_output(self, t_s: float, model: str, unit: str, units: float, uses: int = 1) -> None:
        """``units`` of output by ``model`` at ``t_s`` (``uses``: how many records they sum)."""
        model, unit = self._model(model, uses), self._unit(unit, uses)
        self.output_units[(model, unit)] += units
        window = self._units_window
        if window and window[-1][0] == t_s and window[-1][1] == model:  # a pass's finals: one entry
            window[-1] = (t_s, model, window[-1][2] + units)
            self._units_sum[model][0] += units
            return
        _push(window, self._units_sum, (t_s, model, units))

    @property
    def conservation_error_j(self) -> float:
        """|measured - attributed - idle| over every sealed tick (J); float rounding only."""
        return abs(self.measured_j - self.attributed_j - self.idle_j)

    def throughput_per_watt(self, now_s: float) -> dict[str, float]:
        """Output units per joule (= units/s per W) per model over the recent window.

        A model's energy is its attributed energy plus its share (by attributed
        energy) of the idle energy in the window: static power is part of the
        cost of serving, as in the study.
        """
        horizon = now_s - self._tpw_window_s
        _trim(self._energy_window, self._energy_sum, horizon)
        _trim(self._units_window, self._units_sum, horizon)
        active = {model: max(j, 0.0) for model, (j, _) in self._energy_sum.items() if model}
        idle = max(self._energy_sum.get("", [0.0])[0], 0.0)
        total_active = sum(active.values())
        out: dict[str, float] = {}
        for model, (n, _) in self._units_sum.items():
            energy = active.get(model, 0.0)
            if total_active > 0:
                energy += idle * energy / total_active
            if energy > 0:
                out[model] = n / energy
        return out


def _push(
    window: deque[tuple[float, str, float]], sums: dict[str, list[float]], entry: tuple[float, str, float]
) -> None:
    window.append(entry)
    total = sums.setdefault(entry[1], [0.0, 0])
    total[0] += entry[2]
    total[1] += 1


def _trim(window: deque[tuple[float, str, float]], sums: dict[str, list[float]], horizon_s: float) -> None:
    """Drop the entries older than ``horizon_s`` from the window and its sums."""
    while window and window[0][0] < horizon_s:
        _, model, x = window.popleft()
        entry = sums[model]
        entry[0] -= x
        entry[1] -= 1
        if not entry[1]:
            del sums[model]  # exactly 0, not a rounding residue
