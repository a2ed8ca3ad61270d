"""Live requests: the energy each has been given so far, and when each is next worth a look.

A request gets a small integer code when first seen (work or info) and a row in
:class:`~sidecar.attribution.request_rows.Rows`; sealed ticks add energy to rows by
code; when it is final its record is built and its row freed, so memory follows live
requests, not history.
"""

from __future__ import annotations

import math
from collections.abc import KeysView
from typing import NamedTuple

import numpy as np

from sidecar.attribution.due_checks import DueChecks
from sidecar.attribution.events import RequestInfo
from sidecar.attribution.groups import Groups, group_rows
from sidecar.attribution.info_columns import InfoFields
from sidecar.attribution.live_codes import LiveCodes
from sidecar.attribution.request_rows import Accumulator, Rows
from sidecar.attribution.rules import Split
from sidecar.attribution.tick_sums import add_sums, tick_sums

__all__ = ["Accumulator", "Columns", "RequestTable"]


class Columns(NamedTuple):
    """Some requests' ids, infos and sums, one row each (copies, in the order asked)."""

    request_id: list[str]
    info: InfoFields  # their infos as lists (a request with no info: RequestInfo's defaults)
    phase_j: np.ndarray  # (n, 3) J per phase (prefill, decode, denoise)
    component_j: np.ndarray  # (n, components)
    work: np.ndarray  # (n, regressors)
    busy_s: np.ndarray
    unexplained_j: np.ndarray
    first_t: np.ndarray  # inf: no work seen
    last_t: np.ndarray  # -inf: no work seen
    has_components: np.ndarray  # bool
    warmup_split: np.ndarray  # bool: split by the warm-up fallback rule


class RequestTable:
    """Live requests by id and by code, with the times each is next worth checking.

    The check times make finalization incremental: a pass looks only at requests whose
    check time has come (their end, or their last work plus the timeout), never at
    every idle request (:class:`~sidecar.attribution.due_checks.DueChecks`).
    """

    def __init__(self, timeout_s: float = math.inf) -> None:
        self._codes: dict[str, int] = {}
        self._live = LiveCodes()  # code -> row, as arrays sorted by code: the first seen first
        self._sums = Rows()
        self._next = 0
        self.timeout_s = timeout_s
        self.now_s = float("-inf")  # the latest sealed time: new requests are seen then
        self._due = DueChecks()

    def __len__(self) -> int:
        return len(self._codes)

    def __contains__(self, request_id: object) -> bool:
        """Whether ``request_id`` is live (has a row)."""
        return request_id in self._codes

    def ids(self) -> KeysView[str]:
        """The live requests' ids (a view: read it before the table changes)."""
        return self._codes.keys()

    def code(self, request_id: str, *, check_s: float | None = None) -> int:
        """The code of ``request_id``, creating its row on first sight.

        A new request is checked again at ``check_s`` if given (its stated end), else once the
        timeout has passed without work."""
        return self._code_slot(request_id, check_s)[0]

    def _code_slot(self, request_id: str, check_s: float | None) -> tuple[int, int]:
        """:meth:`code`, and the row it made (-1: the request was live: its row not looked up)."""
        code = self._codes.get(request_id)
        if code is not None:
            return code, -1
        code, slot = self._next, self._sums.take(request_id, self.now_s)
        self._next += 1
        self._codes[request_id] = code
        self._live.add(code, slot)
        if self._due.put(code, self._first_check_s(check_s)):
            self._compact()
        return code, slot

    def _first_check_s(self, end_s: float | None) -> float:
        """When a new request is first looked at: its stated end, else once the timeout has passed
        without work (inf: never, with no timeout)."""
        if end_s is not None:
            return end_s
        return self.now_s + self.timeout_s if math.isfinite(self.timeout_s) else math.inf

    def set_info(self, request_id: str, info: RequestInfo) -> None:
        """What is known about a request (created on first sight; later infos on top of the earlier,
        :meth:`RequestInfo.over`); a stated end is when to look again."""
        end = info.end_s
        code, made = self._code_slot(request_id, end)
        known = made < 0
        slot = self._live.slot_of(code) if known else made  # a new row: no search for it
        older = self._sums.info(slot) if known else None
        self._sums.set_info(slot, info if older is None else info.over(older))
        if known and end is not None:
            self.schedule(code, end)
        elif known and self.now_s > self._sums.seen_s[slot]:
            # heard of again (a tap says it is still live: the proxy's keep-alive of an answer with
            # no work seen yet): the timeout runs from now (its scheduled check finds it waiting)
            self._sums.seen_s[slot] = self.now_s

    def add_new(self, infos: list[RequestInfo]) -> None:
        """:meth:`set_info` of each of ``infos`` in turn, for requests not in the table, with distinct
        ids: their codes, rows and checks made a batch at a time (a span export's requests)."""
        n = len(infos)
        if not n:
            return
        first = self._next
        codes = range(first, first + n)
        self._next += n
        ids = [info.request_id for info in infos]
        self._codes.update(zip(ids, codes, strict=True))
        slots = self._sums.take_many(ids, self.now_s)
        self._live.add_run(first, slots)
        self._sums.set_infos(slots, infos)
        self._due.put_many(codes, list(map(self._first_check_s, [info.end_s for info in infos])))
        self._compact()  # as code() schedules a new request, each

    def codes_of(self, request_ids: tuple[str, ...]) -> list[int | None]:
        """The codes of many ids at once (None where an id has none); creates nothing."""
        return list(map(self._codes.get, request_ids))

    def schedule(self, code: int, check_s: float) -> None:
        """Look at ``code`` again once the sealed time reaches ``check_s`` (never if not finite)."""
        if self._due.put(code, check_s):
            self._compact()

    def _compact(self) -> None:
        """Drop the check entries of removed requests once past their mark (here and in :meth:`due`,
        so they stay bounded also while nothing is due, e.g. before any seal)."""
        self._due.compact(self._is_live, len(self._codes))

    def _is_live(self, codes: np.ndarray) -> np.ndarray:
        is_live: np.ndarray = self._live.slots_of(codes) >= 0
        return is_live

    def due(self, until_s: float) -> list[int]:
        """Live codes with a check time ``<= until_s``, oldest first, each once (taken out)."""
        self._compact()
        return self._due.due(until_s, self._is_live)

    def oldest_slots(self, n: int) -> list[int]:
        """The rows of the ``n`` live requests a cap evicts: those with no measured work first (a
        flood of requests that never work must not push out one that is working), then the rest;
        each the first seen first."""
        if n <= 0:
            return []
        slots = self._live.live_slots()
        idle = ~np.isfinite(self._sums.first_t[slots])
        chosen: list[int] = np.concatenate([slots[idle], slots[~idle]])[:n].tolist()
        return chosen

    @property
    def scheduled(self) -> int:
        """Check entries held (bounded by a few per live request)."""
        return len(self._due)

    def get(self, request_id: str) -> Accumulator | None:
        code = self._codes.get(request_id)
        return None if code is None else Accumulator(self._sums, self._live.slot_of(code))

    def by_code(self, code: int) -> Accumulator | None:
        slot = self._live.slot_of(code)
        return None if slot < 0 else Accumulator(self._sums, slot)

    def models_at(self, slots: np.ndarray, default: str) -> list[str]:
        """The model of the requests in rows ``slots`` (as :meth:`add_energy` returns them; -1: gone)."""
        return self._sums.models_at(slots, default)

    def one_model(self, slots: np.ndarray) -> str | None:
        """The model all the requests in rows ``slots`` name, if one (see :meth:`Rows.one_model`)."""
        return self._sums.one_model(slots)

    def mark_warmup(self, codes: np.ndarray) -> None:
        """The live requests among ``codes`` had a tick split by the warm-up fallback rule."""
        self._sums.warmup_split[self._live_rows(codes)] = True

    def mark_lost(self, codes: np.ndarray) -> None:
        """The live requests among ``codes`` (no repeats) lost work rows this merge: one more each."""
        self._sums.lost_rows[self._live_rows(codes)] += 1

    def slots_of(self, codes: np.ndarray) -> np.ndarray:
        """The row of each of ``codes`` (-1: gone), in their order."""
        rows: np.ndarray = self._live.slots_of(codes)
        return rows

    def _live_rows(self, codes: np.ndarray) -> np.ndarray:
        """The rows of the live requests among ``codes`` (gone ones left out), in their order."""
        rows = self.slots_of(codes)
        return rows[rows >= 0]

    def due_state(self, codes: list[int]) -> tuple[np.ndarray, ...]:
        """Of live requests ``codes``: their rows, whether they stated an end, the end (nan where
        none), first-seen times and latest work (copies, in the order asked)."""
        at = self._live.slots_of(np.array(codes, dtype=np.int64))
        stated, end_s = self._sums.info_columns.ends(at)
        return at, stated, end_s, self._sums.seen_s[at], self._sums.last_t[at]

    def loss_state(self, slots: list[int]) -> tuple[list[int], list[float], list[RequestInfo | None]]:
        """Of the requests in rows ``slots``: work rows lost, earliest work (inf: none), and the infos
        of those with neither (None for the others: the two tell their loss, and a final record's
        info is not built twice)."""
        at, sums = np.array(slots, dtype=np.int64), self._sums
        lost, first_t = sums.lost_rows[at], sums.first_t[at]
        infos: list[RequestInfo | None] = [None] * len(slots)
        need = np.flatnonzero((lost == 0) & ~np.isfinite(first_t)).tolist()
        for k, info in zip(need, sums.infos_at([slots[k] for k in need]), strict=True):
            infos[k] = info
        return lost.tolist(), first_t.tolist(), infos

    def set_seen(self, slots: np.ndarray, seen_s: np.ndarray) -> None:
        """Set the first-seen time of the requests in rows ``slots``."""
        self._sums.seen_s[slots] = seen_s

    def live(self) -> list[Accumulator]:
        return [Accumulator(self._sums, slot) for slot in self._live.live_slots().tolist()]

    def columns(self, slots: list[int]) -> Columns:
        """The sums of the requests in rows ``slots`` (see :attr:`Accumulator.slot`)."""
        idx, sums = np.asarray(slots, dtype=np.int64), self._sums
        return Columns(
            [sums.ids[slot] for slot in slots],
            sums.info_fields(slots),
            sums.phase_j[idx],
            sums.component_j[idx],
            sums.work[idx],
            sums.busy_s[idx],
            sums.unexplained_j[idx],
            sums.first_t[idx],
            sums.last_t[idx],
            sums.has_components[idx],
            sums.warmup_split[idx],
        )

    def remove(self, request_id: str) -> None:
        self.remove_many([request_id])

    def remove_many(self, request_ids: list[str]) -> None:
        """Forget these live requests; their rows are cleaned at once and reused."""
        codes = [self._codes.pop(rid) for rid in request_ids]
        self._sums.give_back(self._live.slots_of(np.array(codes, dtype=np.int64)).tolist())
        self._live.remove(codes)

    def add_energy(
        self,
        req: np.ndarray,
        phase: np.ndarray,
        split: Split,
        time_share: np.ndarray,
        t0: np.ndarray,
        t1: np.ndarray,
        groups: Groups | None = None,
    ) -> np.ndarray:
        """Add one tick's per-event energies to their requests (sums per request at C speed); returns
        each group's row in the table (-1: the request is gone), for :meth:`models_at`.

        ``groups`` is :func:`group_rows` of ``req`` when the caller has it already.
        """
        if req.size == 0:
            return np.zeros(0, dtype=np.int64)
        g = groups if groups is not None else group_rows(req)
        sums = tick_sums(g, phase, split, time_share, t0, t1)
        at = self._live.slots_of(g.codes)  # -1: gone
        gone = at < 0
        if gone.any():  # finalized while its late work was pending; counted upstream
            add_sums(self._sums, at[~gone], sums.take(~gone))
        else:
            add_sums(self._sums, at, sums)
        return at
