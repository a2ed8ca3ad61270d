"""Per-request accumulators: the energy a live request has been given so far.

A request gets a small integer code when first seen (work or info); sealed
ticks add energy to it by code; when it is final its record is built and its
slot freed, so memory follows live requests, not history.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from sidecar.attribution.events import Phase, RequestInfo
from sidecar.attribution.fit import WORK
from sidecar.attribution.records import RequestEnergy
from sidecar.attribution.rules import COMPONENTS, Split

__all__ = ["Accumulator", "RequestTable"]

_PHASES = (Phase.PREFILL, Phase.DECODE, Phase.DENOISE)


@dataclass(slots=True)
class Accumulator:
    """Energy and timing of one live request."""

    request_id: str
    info: RequestInfo | None = None
    phase_j: np.ndarray = field(default_factory=lambda: np.zeros(3))
    component_j: np.ndarray = field(default_factory=lambda: np.zeros(len(COMPONENTS)))
    work: np.ndarray = field(default_factory=lambda: np.zeros(len(WORK)))  # fitted regressors, scaled
    unexplained_j: float = 0.0  # energy the fitted model's scaling moved onto this request
    busy_s: float = 0.0
    first_t: float = float("inf")  # earliest work seen (s)
    last_t: float = float("-inf")  # latest work seen (s)
    has_components: bool = False


class RequestTable:
    """Live requests by id and by code."""

    def __init__(self) -> None:
        self._codes: dict[str, int] = {}
        self._accs: dict[int, Accumulator] = {}
        self._next = 0

    def __len__(self) -> int:
        return len(self._accs)

    def code(self, request_id: str) -> int:
        """The code of ``request_id``, creating its accumulator on first sight."""
        code = self._codes.get(request_id)
        if code is None:
            code = self._next
            self._next += 1
            self._codes[request_id] = code
            self._accs[code] = Accumulator(request_id)
        return code

    def get(self, request_id: str) -> Accumulator | None:
        code = self._codes.get(request_id)
        return None if code is None else self._accs[code]

    def by_code(self, code: int) -> Accumulator | None:
        return self._accs.get(code)

    def live(self) -> list[Accumulator]:
        return list(self._accs.values())

    def remove(self, request_id: str) -> None:
        code = self._codes.pop(request_id)
        del self._accs[code]

    def add_energy(
        self,
        req: np.ndarray,
        phase: np.ndarray,
        split: Split,
        time_share: np.ndarray,
        t0: np.ndarray,
        t1: np.ndarray,
    ) -> None:
        """Add one tick's per-event energies to their requests (vectorized per request)."""
        codes, inverse = np.unique(req, return_inverse=True)
        n = codes.size
        phase_j = np.zeros((n, 3))
        np.add.at(phase_j, (inverse, phase), split.row_j)
        component_j = split.component_j
        busy = np.bincount(inverse, weights=time_share, minlength=n)
        first = np.full(n, np.inf)
        np.minimum.at(first, inverse, t0)
        last = np.full(n, -np.inf)
        np.maximum.at(last, inverse, t1)
        comp = work = unexplained = None
        if component_j is not None and split.work is not None:
            comp = np.zeros((n, component_j.shape[1]))
            np.add.at(comp, inverse, component_j)
            work = np.zeros((n, split.work.shape[1]))
            np.add.at(work, inverse, split.work)
            unexplained = np.bincount(inverse, weights=split.unexplained_j, minlength=n)
        for k, code in enumerate(codes.tolist()):
            acc = self._accs.get(code)
            if acc is None:  # finalized while its late work was pending; counted upstream
                continue
            acc.phase_j += phase_j[k]
            acc.busy_s += float(busy[k])
            acc.first_t = min(acc.first_t, float(first[k]))
            acc.last_t = max(acc.last_t, float(last[k]))
            if comp is not None and work is not None and unexplained is not None:
                acc.component_j += comp[k]
                acc.work += work[k]
                acc.unexplained_j += float(unexplained[k])
                acc.has_components = True


def build_record(
    acc: Accumulator,
    *,
    final: bool,
    default_model: str,
    rule: str,
    energy_source: str,
    update_period_s: float | None,
    end_unix_s: float | None,
    extra_attributes: dict[str, str] | None = None,
    interval_j: tuple[float, float] | None = None,
    fit_quality: str = "",
) -> RequestEnergy:
    """The immutable record of an accumulator, final or provisional."""
    info = acc.info or RequestInfo(acc.request_id, model=default_model)
    model = info.model if info.model != "unknown" else default_model
    window_s = acc.last_t - acc.first_t if acc.last_t >= acc.first_t else 0.0
    approximate = update_period_s is not None and window_s < update_period_s
    output_units = info.output_units or (float(info.output_tokens) if info.unit == "token" else 0.0)
    return RequestEnergy(
        request_id=acc.request_id,
        model=model,
        operation=info.operation,
        task=info.task,
        unit=info.unit,
        energy_j=float(acc.phase_j.sum()),
        phase_j={p.label: float(acc.phase_j[p]) for p in _PHASES},
        component_j=(
            {name: float(v) for name, v in zip(COMPONENTS, acc.component_j, strict=True)}
            if acc.has_components
            else {}
        ),
        prompt_tokens=info.prompt_tokens,
        output_tokens=info.output_tokens,
        output_units=output_units,
        start_s=info.start_s if info.start_s is not None else _finite(acc.first_t),
        end_s=info.end_s if info.end_s is not None else _finite(acc.last_t),
        end_unix_s=end_unix_s,
        busy_s=acc.busy_s,
        approximate=approximate,
        final=final,
        rule=rule,
        energy_source=energy_source,
        attributes={**info.attributes, **(extra_attributes or {})},
        energy_low_j=None if interval_j is None else interval_j[0],
        energy_high_j=None if interval_j is None else interval_j[1],
        fit_quality=fit_quality,
    )


def _finite(x: float) -> float | None:
    return x if np.isfinite(x) else None
