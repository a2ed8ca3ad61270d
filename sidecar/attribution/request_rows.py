"""Every live request as one row of arrays: no Python object per request.

A request's sums (J per phase and component, the fitted regressors, busy time,
first and last work) and flags are array columns, its id a list, its
:class:`~sidecar.attribution.events.RequestInfo` taken apart into columns
(:mod:`~sidecar.attribution.info_columns`), all at its row; a
sealed tick adds to all its requests' rows at once. :class:`Accumulator` is a
view of one row, made when asked for. Rows are reused; the arrays double when full.
"""

from __future__ import annotations

from array import array

import numpy as np

from sidecar.attribution.events import RequestInfo
from sidecar.attribution.fit import WORK
from sidecar.attribution.info_columns import InfoColumns, InfoFields
from sidecar.attribution.rules import COMPONENTS

__all__ = ["Accumulator", "Rows"]


_CLEAN = {"first_t": np.inf, "last_t": -np.inf, "seen_s": -np.inf}  # a free row's values (else 0)


class Rows:
    """Every live request's state as one row of arrays (a tick adds to all its requests at once).

    No object per request: its id sits in a list, its info, sums and flags in arrays,
    all at its row (slot); :class:`Accumulator` is a view of one row, made when asked for.
    """

    _FIELDS = (
        "phase_j",
        "component_j",
        "work",
        "busy_s",
        "unexplained_j",
        "first_t",
        "last_t",
        "has_components",
        "lost_rows",
        "seen_s",
        "warmup_split",
    )

    def __init__(self, capacity: int = 1024) -> None:
        self.phase_j = np.zeros((capacity, 3))
        self.component_j = np.zeros((capacity, len(COMPONENTS)))
        self.work = np.zeros((capacity, len(WORK)))
        self.busy_s = np.zeros(capacity)
        self.unexplained_j = np.zeros(capacity)
        self.first_t = np.full(capacity, np.inf)
        self.last_t = np.full(capacity, -np.inf)
        self.has_components = np.zeros(capacity, dtype=bool)
        self.lost_rows = np.zeros(capacity, dtype=np.int64)  # work rows dropped whole (late, refused)
        self.seen_s = np.full(capacity, -np.inf)  # sealed time last heard of; -inf: before the first seal
        self.warmup_split = np.zeros(capacity, dtype=bool)  # a tick split by the warm-up fallback rule
        self.ids: list[str] = [""] * capacity
        self.info_columns = InfoColumns(capacity)
        # each row's model as its info names it (None: no info, or "unknown"), read a tick at a time
        self.models = np.full(capacity, None, dtype=object)
        self.free = array("q", range(capacity - 1, -1, -1))  # 8 bytes a free row, not an int object

    def take(self, request_id: str, seen_s: float) -> int:
        """A clean row for a new request (rows are cleaned when given back, many at once)."""
        if not self.free:
            self._grow()
        slot = self.free.pop()
        self.seen_s[slot] = seen_s
        self.ids[slot] = request_id
        return slot

    def take_many(self, request_ids: list[str], seen_s: float) -> list[int]:
        """Clean rows for new requests, the rows that many :meth:`take` calls would give, in order."""
        n = len(request_ids)
        while len(self.free) < n:
            self._grow()
        slots = self.free[len(self.free) - n :].tolist()[::-1]  # take pops from the end
        del self.free[len(self.free) - n :]
        self.seen_s[slots] = seen_s
        ids = self.ids
        for slot, request_id in zip(slots, request_ids, strict=True):
            ids[slot] = request_id
        return slots

    def _grow(self) -> None:
        """Twice the rows; the new ones are taken after the free ones left (lowest first)."""
        n = self.busy_s.size
        for name in self._FIELDS:
            old, clean = getattr(self, name), _CLEAN.get(name, 0)
            shape = (2 * n, *old.shape[1:])
            # zeros come from calloc: the new half's pages are the kernel's untouched zero pages, no
            # RSS until a row is taken (most columns; a flood's table is up to half spare room)
            grown = np.zeros(shape, dtype=old.dtype) if clean == 0 else np.full(shape, clean, dtype=old.dtype)
            grown[:n] = old
            setattr(self, name, grown)
        self.ids.extend([""] * n)
        self.info_columns.grow(n)
        self.models = np.concatenate([self.models, np.full(n, None, dtype=object)])
        self.free = array("q", range(2 * n - 1, n - 1, -1)) + self.free

    def give_back(self, slots: list[int]) -> None:
        """Clean rows ``slots`` (each column at once) and free them."""
        at = np.array(slots, dtype=np.int64)
        for name in self._FIELDS:
            getattr(self, name)[at] = _CLEAN.get(name, 0)
        self.models[at] = None
        ids = self.ids
        for slot in slots:
            ids[slot] = ""
        self.info_columns.clean(slots)
        self.free.extend(slots)

    def set_info(self, slot: int, info: RequestInfo | None) -> None:
        """What is known about the request in row ``slot`` (its model kept apart, for ticks)."""
        self.info_columns.put(slot, info)
        self.models[slot] = _model_of(info)

    def set_infos(self, slots: list[int], infos: list[RequestInfo]) -> None:
        """:meth:`set_info` of each row in ``slots``."""
        self.info_columns.put_many(slots, infos)
        self.models[slots] = list(map(_model_of, infos))

    def info(self, slot: int) -> RequestInfo | None:
        """The info of the request in row ``slot`` (built again from the columns), or None."""
        return self.info_columns.get(slot, self.ids[slot], self.models[slot])

    def info_fields(self, slots: list[int]) -> InfoFields:
        """The infos of the requests in rows ``slots`` as lists (:meth:`InfoColumns.fields`)."""
        return self.info_columns.fields(slots, self._models(slots))

    def infos_at(self, slots: list[int]) -> list[RequestInfo | None]:
        """The info of each request in rows ``slots`` (None where a row has none)."""
        ids = self.ids
        return self.info_columns.get_many(slots, [ids[s] for s in slots], self._models(slots))

    def _models(self, slots: list[int]) -> list[str | None]:
        """The model column of rows ``slots`` (None: no info, or "unknown")."""
        models: list[str | None] = self.models[slots].tolist() if slots else []
        return models

    def models_at(self, slots: np.ndarray, default: str) -> list[str]:
        """The model of each row (``default`` where no info names one; a row < 0: gone, ``default``)."""
        models: list[str | None] = self.models[slots].tolist()
        if (slots < 0).any():
            models = [None if s < 0 else m for s, m in zip(slots.tolist(), models, strict=True)]
        if None in models:
            return [default if m is None else m for m in models]
        return models  # type: ignore[return-value]  # no None left

    def one_model(self, slots: np.ndarray) -> str | None:
        """The model every row of ``slots`` names, if they all name the same one (None: not so, a row
        names none, or a row < 0: gone). The usual tick, one model served, is told at C speed:
        ``list.count`` compares by identity first, and a batch's requests share one model string."""
        if not slots.size or slots.min() < 0:
            return None
        models: list[str | None] = self.models[slots].tolist()
        first = models[0]
        return first if first is not None and models.count(first) == len(models) else None


def _model_of(info: RequestInfo | None) -> str | None:
    """The model an info names (None: no info, or "unknown"), as a row's model column holds it."""
    return None if info is None or info.model == "unknown" else info.model


class Accumulator:
    """One live request's row in the table: what it is and the energy given to it so far."""

    __slots__ = ("_slot", "_sums")

    def __init__(self, sums: Rows, slot: int) -> None:
        self._sums, self._slot = sums, slot

    @property
    def slot(self) -> int:
        """Its row in the table's arrays."""
        return self._slot

    @property
    def request_id(self) -> str:
        return self._sums.ids[self._slot]

    @property
    def info(self) -> RequestInfo | None:
        """What is known about it (model, task, tokens, end), or None."""
        return self._sums.info(self._slot)

    @info.setter
    def info(self, value: RequestInfo | None) -> None:
        self._sums.set_info(self._slot, value)

    @property
    def seen_s(self) -> float:
        """Sealed time when last heard of (s); -inf: before the first seal."""
        return float(self._sums.seen_s[self._slot])

    @seen_s.setter
    def seen_s(self, value: float) -> None:
        self._sums.seen_s[self._slot] = value

    @property
    def lost_rows(self) -> int:
        """Work rows dropped whole (late: for time already sealed or never covered)."""
        return int(self._sums.lost_rows[self._slot])

    @lost_rows.setter
    def lost_rows(self, value: int) -> None:
        self._sums.lost_rows[self._slot] = value

    @property
    def warmup_split(self) -> bool:
        """A tick was split by the fallback rule after the warm-up time bound."""
        return bool(self._sums.warmup_split[self._slot])

    @warmup_split.setter
    def warmup_split(self, value: bool) -> None:
        self._sums.warmup_split[self._slot] = value

    # the sums (arrays: a view of this request's row)
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
