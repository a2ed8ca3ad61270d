"""Per-request accumulators: the energy a live request has been given so far.

A request gets a small integer code when first seen (work or info); sealed
ticks add energy to it by code; when it is final its record is built and its
slot freed, so memory follows live requests, not history.
"""

from __future__ import annotations

import heapq
import math
from typing import NamedTuple

import numpy as np

from sidecar.attribution.events import RequestInfo
from sidecar.attribution.fit import WORK
from sidecar.attribution.groups import Groups, group_rows
from sidecar.attribution.rules import COMPONENTS, Split

__all__ = ["Accumulator", "Columns", "RequestTable"]


class Columns(NamedTuple):
    """Some requests' sums, one row each (copies, in the order asked)."""

    phase_j: np.ndarray  # (n, 3) J per phase (prefill, decode, denoise)
    component_j: np.ndarray  # (n, components)
    work: np.ndarray  # (n, regressors)
    busy_s: np.ndarray
    unexplained_j: np.ndarray
    first_t: np.ndarray  # inf: no work seen
    last_t: np.ndarray  # -inf: no work seen
    has_components: np.ndarray  # bool


class _Sums:
    """Every live request's energy sums as one row of arrays (a tick adds to all its requests at once)."""

    def __init__(self, capacity: int = 1024) -> None:
        self.phase_j = np.zeros((capacity, 3))
        self.component_j = np.zeros((capacity, len(COMPONENTS)))
        self.work = np.zeros((capacity, len(WORK)))
        self.busy_s = np.zeros(capacity)
        self.unexplained_j = np.zeros(capacity)
        self.first_t = np.full(capacity, np.inf)
        self.last_t = np.full(capacity, -np.inf)
        self.has_components = np.zeros(capacity, dtype=bool)
        self.free = list(range(capacity - 1, -1, -1))

    _FIELDS = (
        "phase_j",
        "component_j",
        "work",
        "busy_s",
        "unexplained_j",
        "first_t",
        "last_t",
        "has_components",
    )

    def take(self) -> int:
        """A zeroed row for a new request."""
        if not self.free:
            n = self.busy_s.size
            for name in self._FIELDS:
                old = getattr(self, name)
                grown = np.zeros((2 * n, *old.shape[1:]), dtype=old.dtype)
                grown[:n] = old
                setattr(self, name, grown)
            self.first_t[n:], self.last_t[n:] = np.inf, -np.inf
            self.free = list(range(2 * n - 1, n - 1, -1))
        slot = self.free.pop()
        self.phase_j[slot] = self.component_j[slot] = self.work[slot] = 0.0
        self.busy_s[slot] = self.unexplained_j[slot] = 0.0
        self.first_t[slot], self.last_t[slot], self.has_components[slot] = np.inf, -np.inf, False
        return slot


class Accumulator:
    """Energy and timing of one live request (its sums live in the table's arrays, one row each)."""

    __slots__ = ("_slot", "_sums", "info", "lost_rows", "request_id", "seen_s", "warmup_split")

    def __init__(self, request_id: str, sums: _Sums, slot: int, *, seen_s: float = float("-inf")) -> None:
        self.request_id = request_id
        self.info: RequestInfo | None = None
        self.seen_s = seen_s  # sealed time when first seen (s); -inf: before the first seal
        self.lost_rows = 0  # work rows dropped whole (late: for time already sealed or never covered)
        self.warmup_split = False  # a tick was split by the fallback rule after the warm-up time bound
        self._sums, self._slot = sums, slot

    @property
    def slot(self) -> int:
        """Its row in the table's arrays."""
        return self._slot

    # the sums, in the table's arrays (arrays: a view of this request's row)
    @property
    def phase_j(self) -> np.ndarray:
        """J per phase (prefill, decode, denoise)."""
        row: np.ndarray = self._sums.phase_j[self._slot]
        return row

    @phase_j.setter
    def phase_j(self, value: np.ndarray) -> None:
        self._sums.phase_j[self._slot] = value

    @property
    def busy_s(self) -> float:
        """Its share of busy time (s)."""
        return float(self._sums.busy_s[self._slot])

    @busy_s.setter
    def busy_s(self, value: float) -> None:
        self._sums.busy_s[self._slot] = value

    @property
    def component_j(self) -> np.ndarray:
        """J per model component."""
        row: np.ndarray = self._sums.component_j[self._slot]
        return row

    @property
    def work(self) -> np.ndarray:
        """The fitted regressors, scaled."""
        row: np.ndarray = self._sums.work[self._slot]
        return row

    @property
    def unexplained_j(self) -> float:
        """J the fitted model's scaling moved onto this request."""
        return float(self._sums.unexplained_j[self._slot])

    @property
    def first_t(self) -> float:
        """Earliest work seen (s)."""
        return float(self._sums.first_t[self._slot])

    @property
    def last_t(self) -> float:
        """Latest work seen (s)."""
        return float(self._sums.last_t[self._slot])

    @property
    def has_components(self) -> bool:
        return bool(self._sums.has_components[self._slot])


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
        self._sums = _Sums()
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
            self._accs[code] = Accumulator(request_id, self._sums, self._sums.take(), seen_s=self.now_s)
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

    def columns(self, slots: list[int]) -> Columns:
        """The sums of the requests in rows ``slots`` (see :attr:`Accumulator.slot`)."""
        idx, sums = np.asarray(slots, dtype=np.int64), self._sums
        return Columns(
            sums.phase_j[idx],
            sums.component_j[idx],
            sums.work[idx],
            sums.busy_s[idx],
            sums.unexplained_j[idx],
            sums.first_t[idx],
            sums.last_t[idx],
            sums.has_components[idx],
        )

    def remove(self, request_id: str) -> None:
        code = self._codes.pop(request_id)
        self._sums.free.append(self._accs.pop(code)._slot)

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
        busy = np.bincount(g.inverse, weights=time_share, minlength=n)
        first = np.minimum.reduceat(t0[g.order], g.starts)
        last = np.maximum.reduceat(t1[g.order], g.starts)
        comp = work = unexplained = None
        if split.component_j is not None and split.work is not None and split.unexplained_j is not None:
            comp = np.add.reduceat(split.component_j[g.order], g.starts, axis=0)
            work = np.add.reduceat(split.work[g.order], g.starts, axis=0)
            unexplained = np.bincount(g.inverse, weights=split.unexplained_j, minlength=n)
        found = [self._accs.get(code) for code in g.codes.tolist()]
        if None in found:  # finalized while its late work was pending; counted upstream
            keep = [k for k, acc in enumerate(found) if acc is not None]
            found = [found[k] for k in keep]
            phase_j, busy, first, last = phase_j[keep], busy[keep], first[keep], last[keep]
            if comp is not None and work is not None and unexplained is not None:
                comp, work, unexplained = comp[keep], work[keep], unexplained[keep]
        slots = np.array([acc._slot for acc in found if acc is not None], dtype=np.int64)
        sums = self._sums
        sums.phase_j[slots] += phase_j
        sums.busy_s[slots] += busy
        sums.first_t[slots] = np.minimum(sums.first_t[slots], first)
        sums.last_t[slots] = np.maximum(sums.last_t[slots], last)
        if comp is not None and work is not None and unexplained is not None:
            sums.component_j[slots] += comp
            sums.work[slots] += work
            sums.unexplained_j[slots] += unexplained
            sums.has_components[slots] = True
