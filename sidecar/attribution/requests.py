"""Per-request accumulators: the energy a live request has been given so far.

A request gets a small integer code when first seen (work or info); sealed
ticks add energy to it by code; when it is final its record is built and its
slot freed, so memory follows live requests, not history.
"""

from __future__ import annotations

import heapq
import math
from dataclasses import dataclass, field

import numpy as np

from sidecar.attribution.events import Phase, RequestInfo
from sidecar.attribution.fit import WORK
from sidecar.attribution.records import RequestEnergy
from sidecar.attribution.rules import COMPONENTS, Split

__all__ = ["Accumulator", "Groups", "RequestTable", "group_rows"]

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
    seen_s: float = float("-inf")  # sealed time when first seen (s); -inf: before the first seal
    lost_rows: int = 0  # work rows dropped whole (late: for time already sealed or never covered)
    warmup_split: bool = False  # a tick was split by the fallback rule after the warm-up time bound


class RequestTable:
    """Live requests by id and by code, with a heap of the times each is next worth checking.

    The heap makes finalization incremental: a pass looks only at requests whose
    check time has come (their end, or their last work plus the timeout), never at
    every idle request. Entries are hints: a popped request is re-checked and
    re-scheduled if it is not done yet; entries of removed requests are skipped.
    """

    def __init__(self, timeout_s: float = math.inf) -> None:
        self._codes: dict[str, int] = {}
        self._accs: dict[int, Accumulator] = {}
        self._next = 0
        self.timeout_s = timeout_s
        self.now_s = float("-inf")  # the latest sealed time: new requests are seen then
        self._due: list[tuple[float, int]] = []

    def __len__(self) -> int:
        return len(self._accs)

    def code(self, request_id: str) -> int:
        """The code of ``request_id``, creating its accumulator on first sight."""
        code = self._codes.get(request_id)
        if code is None:
            code = self._next
            self._next += 1
            self._codes[request_id] = code
            self._accs[code] = Accumulator(request_id, seen_s=self.now_s)
            if math.isfinite(self.timeout_s):
                self.schedule(code, self.now_s + self.timeout_s)
        return code

    def codes_of(self, request_ids: tuple[str, ...]) -> list[int | None]:
        """The codes of many ids at once (None where an id has none); creates nothing."""
        return list(map(self._codes.get, request_ids))

    def schedule(self, code: int, check_s: float) -> None:
        """Look at ``code`` again once the sealed time reaches ``check_s`` (never if not finite)."""
        if check_s < math.inf:
            heapq.heappush(self._due, (check_s if check_s > -math.inf else -math.inf, code))

    def due(self, until_s: float) -> list[int]:
        """Live codes with a check time ``<= until_s``, oldest first, each once (popped)."""
        if len(self._due) > 4 * len(self._accs) + 1024:  # drop entries of removed requests
            self._due = [e for e in self._due if e[1] in self._accs]
            heapq.heapify(self._due)
        heap, found = self._due, set()
        while heap and heap[0][0] <= until_s:
            code = heapq.heappop(heap)[1]
            if code in self._accs:
                found.add(code)
        return sorted(found)

    def oldest(self) -> Accumulator | None:
        """The live request seen first (the one a cap evicts)."""
        return next(iter(self._accs.values()), None)

    @property
    def scheduled(self) -> int:
        """Entries in the check heap (bounded by a few per live request)."""
        return len(self._due)

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
        groups: Groups | None = None,
    ) -> None:
        """Add one tick's per-event energies to their requests (sums per request at C speed).

        ``groups`` is :func:`group_rows` of ``req`` when the caller has it already.
        """
        if req.size == 0:
            return
        g = groups if groups is not None else group_rows(req)
        n = g.codes.size
        phase_j = np.bincount(g.inverse * 3 + phase, weights=split.row_j, minlength=3 * n).reshape(n, 3)
        busy = np.bincount(g.inverse, weights=time_share, minlength=n).tolist()
        first = np.minimum.reduceat(t0[g.order], g.starts).tolist()
        last = np.maximum.reduceat(t1[g.order], g.starts).tolist()
        comp = work = None
        unexplained: list[float] = []
        if split.component_j is not None and split.work is not None and split.unexplained_j is not None:
            comp = np.add.reduceat(split.component_j[g.order], g.starts, axis=0)
            work = np.add.reduceat(split.work[g.order], g.starts, axis=0)
            unexplained = np.bincount(g.inverse, weights=split.unexplained_j, minlength=n).tolist()
        accs = self._accs
        for k, code in enumerate(g.codes.tolist()):
            acc = accs.get(code)
            if acc is None:  # finalized while its late work was pending; counted upstream
                continue
            acc.phase_j += phase_j[k]
            acc.busy_s += busy[k]
            if first[k] < acc.first_t:
                acc.first_t = first[k]
            if last[k] > acc.last_t:
                acc.last_t = last[k]
            if comp is not None and work is not None:
                acc.component_j += comp[k]
                acc.work += work[k]
                acc.unexplained_j += unexplained[k]
                acc.has_components = True


@dataclass(frozen=True, slots=True)
class Groups:
    """Rows grouped by request code: ``codes`` (sorted, unique), each row's group ``inverse``, and
    ``order`` (rows sorted by group, stable) with each group's first position ``starts`` in it."""

    codes: np.ndarray
    inverse: np.ndarray
    order: np.ndarray
    starts: np.ndarray


def group_rows(req: np.ndarray) -> Groups:
    """Group a tick's rows by request code: one stable sort (codes are small integers)."""
    order = np.argsort(req, kind="stable")
    ordered = req[order]
    new = np.empty(ordered.size, dtype=bool)
    new[:1] = True
    np.not_equal(ordered[1:], ordered[:-1], out=new[1:])
    starts = np.flatnonzero(new)
    inverse = np.empty(req.size, dtype=np.int64)
    inverse[order] = np.cumsum(new) - 1
    return Groups(ordered[starts], inverse, order, starts)


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
