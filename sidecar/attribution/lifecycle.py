"""Requests' endings: which records become final, expire, are evicted or stay open.

:class:`RequestLifecycle` is the half of :class:`~sidecar.attribution.engine.Attributor`
that ends requests; the other half seals ticks and shares their energy. A pass
looks only at the requests whose check time has come (the table's heap: their end
plus one counter update, or their last work plus ``request_timeout_s``), so a
tick's cost does not grow with idle requests in flight. A final record whose
work was lost (dropped as late, refused, evicted, or for time the timeline never
covered) carries ``energy_unknown`` and its reason, and is counted.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable
from typing import Any, NamedTuple

import numpy as np

from sidecar.attribution.events import Phase, RequestInfo
from sidecar.attribution.final_records import RecordContext, build_records
from sidecar.attribution.pending import PendingWork
from sidecar.attribution.record_batch import MODEL, OUTPUT_UNITS, REQUEST_ID, UNIT, RecordBatch
from sidecar.attribution.records import RequestEnergy
from sidecar.attribution.requests import RequestTable
from sidecar.attribution.rules import SplitRule
from sidecar.attribution.totals import Totals
from sidecar.recent_ids_sorted import SortedRecentIds
from sidecar.timeline import Timeline

__all__ = ["RequestLifecycle"]

_EPS_S = 1e-9  # float slack when comparing times (s)
_PHASES = (Phase.PREFILL, Phase.DECODE, Phase.DENOISE)
FINALIZED_KEPT = 100_000  # recent final ids remembered to refuse their late work


class Plan(NamedTuple):
    """What a finalize pass does with its due requests."""

    done_codes: np.ndarray  # codes of the requests that end now, in due order
    inferred: np.ndarray  # per done request: its end inferred (no stated end: expired)
    later: list[tuple[int, float]]  # (code, check time) of those looked at again later
    expired: int  # done requests without a stated end (request_timeout_s passed)


def plan_finals(
    table: RequestTable,
    due: list[int],
    sealed: float,
    period: float,
    first_sealed: float,
    timeout_s: float,
    has_work: np.ndarray,
) -> Plan:
    """Which due requests end now, at once over their rows: one with a stated end once the sealed
    time is one counter update past it and none of its work is pending; one without once
    ``timeout_s`` passed since its last work (or since it was first seen: ``first_sealed`` for
    those seen before the first seal, which is written back). The others are looked at again.
    ``has_work``: for each of ``due``, whether some of its work is still pending."""
    slots, stated, ends, seen, last_t = table.due_state(due)
    no_end = ~stated
    unseen = no_end & (seen == -math.inf)  # seen before the first seal: as if seen then
    if unseen.any():
        seen[unseen] = first_sealed
        table.set_seen(slots[unseen], seen[unseen])
    last = np.maximum(last_t, seen)
    waits = no_end & (sealed - last < timeout_s)  # no stated end: the timeout ends it
    early = stated & (sealed < ends + period - _EPS_S)  # not yet covered one update past its end
    pending = stated & ~early & has_work  # work after its stated end pending
    again = waits | early | pending
    with np.errstate(invalid="ignore"):  # -inf + inf: nan, as in Python; nan is never scheduled
        check_s = np.where(waits, last + timeout_s, np.where(early, ends + period, sealed))
    codes = np.asarray(due, dtype=np.int64)
    later = list(zip(codes[again].tolist(), check_s[again].tolist(), strict=True))
    done = ~again
    return Plan(codes[done], no_end[done], later, int((no_end & done).sum()))


class RequestLifecycle:
    """Ends requests; the attributor sets these attributes."""

    timeline: Timeline
    rule: SplitRule
    model: str
    energy_source: str
    request_timeout_s: float
    max_requests: int | None
    requests: RequestTable
    totals: Totals
    dropped: Counter[str]
    _unix_offset: Callable[[], float]
    _pending: PendingWork
    _sealed_t: float | None
    _first_sealed_t: float | None
    _finalized: SortedRecentIds[str]  # recent final ids (FINALIZED_KEPT), to refuse their late work
    _done_codes: np.ndarray  # found final, records not built yet (over most_final): codes
    _done_inferred: np.ndarray  # and whether each one's end was inferred

    def _finalize(self, most: int | None = None) -> RecordBatch:
        """Records that became final: only requests whose check time has come are looked at. With
        ``most``, the records of at most that many are built now, the oldest first; the other
        requests found final wait for the next call (:attr:`finals_left`), which builds theirs
        first (it looks at the requests due only while it has room for more)."""
        done, ended = self._done_codes, self._done_inferred
        if most is None or done.size < most:
            codes, inferred = self._ended_now()
            if done.size:  # a request found final already, due again (a new info): once
                new = ~np.isin(codes, done)
                codes, inferred = np.concatenate((done, codes[new])), np.concatenate((ended, inferred[new]))
            done, ended = codes, inferred
        codes, inferred = done[:most], ended[:most]
        self._done_codes, self._done_inferred = done[codes.size :], ended[codes.size :]
        if not codes.size:
            return RecordBatch()
        slots = self.requests.slots_of(codes)
        live = slots >= 0  # one found final last call and evicted since is gone (its record made)
        return self._finals(slots[live].tolist(), inferred[live].tolist())

    @property
    def finals_left(self) -> int:
        """Requests found final whose records wait for the next :meth:`advance` (over its
        ``most_final``)."""
        return int(self._done_codes.size)

    def _ended_now(self) -> tuple[np.ndarray, np.ndarray]:
        """The codes of the due requests that end now, and whether each one's end was inferred."""
        sealed = self._sealed_t
        due = [] if sealed is None else self.requests.due(sealed)
        if sealed is None or not due:
            return np.empty(0, dtype=np.int64), np.empty(0, dtype=bool)
        period = self.timeline.update_period_s() or 0.0
        has_work = self._pending.among(due)  # which due requests still have work pending
        first_s = self._first_sealed_t if self._first_sealed_t is not None else sealed
        plan = plan_finals(self.requests, due, sealed, period, first_s, self.request_timeout_s, has_work)
        self.dropped["expired"] += plan.expired
        for code, check_s in plan.later:
            self.requests.schedule(code, check_s)
        return plan.done_codes, plan.inferred

    def _evict(self) -> RecordBatch:
        """Over ``max_requests`` in flight: the oldest end now, counted, their energy unknown."""
        over = 0 if self.max_requests is None else len(self.requests) - self.max_requests
        if over <= 0:
            return RecordBatch()
        slots = self.requests.oldest_slots(over)
        self.dropped["evicted"] += len(slots)
        return self._finals(slots, [True] * len(slots), "evicted")

    def _finals(self, slots: list[int], inferred: list[bool], unknown: str = "") -> RecordBatch:
        """Build the final records of the requests in rows ``slots`` (one pass over the table's
        columns), forget them, count their output.

        ``unknown``: the reason all of them have unknown energy ('' : each one's own, if any)."""
        extras: list[dict[str, str] | None] = []
        reasons = [unknown] * len(slots) if unknown else self._unknown_reasons(slots, inferred)
        for reason, end_inferred in zip(reasons, inferred, strict=True):
            extra = {"end_inferred": "true"} if end_inferred else {}
            if reason:
                self.dropped["energy_unknown"] += 1
                extra |= {"energy_unknown": "true", "energy_unknown_reason": reason}
            extras.append(extra or None)
        records = build_records(self.requests, slots, self._context(), final=True, extra_attributes=extras)
        sealed = self._sealed_t
        ids = [values[REQUEST_ID] for values in records.values]
        self.requests.remove_many(ids)
        self._finalized.add_many(ids)
        if sealed is not None:
            self.totals.add_outputs(
                sealed,
                (
                    (values[MODEL], values[UNIT], values[OUTPUT_UNITS])
                    for values, attrs in zip(records.values, extras, strict=True)
                    if values[OUTPUT_UNITS] > 0 and not (attrs and "energy_unknown" in attrs)
                ),
            )
        return records

    def _context(self) -> RecordContext:
        """What the records built now share."""
        rule = self.rule
        return RecordContext(
            default_model=self.model,
            rule=rule.name,
            energy_source=self.energy_source,
            update_period_s=self.timeline.update_period_s(),
            unix_offset_s=self._unix_offset(),
            fit_quality=rule.quality(),
            intervals_j=rule.intervals_j,
        )

    def _unknown_reasons(self, slots: list[int], inferred: list[bool]) -> list[str]:
        """Why each request's energy is unknown ('' if known): its work was lost, or none was seen
        and it began before the first sealed tick (``not_covered``), or it timed out without any
        work seen (``expired``: ended by the timeout, ``inferred``; its work,
        if any came, came after: a long answer not streamed, a long wait in a queue)."""
        lost, first_t, infos = self.requests.loss_state(slots)
        first = self._first_sealed_t
        out = []
        for lost_rows, first_work, info, timed_out in zip(lost, first_t, infos, inferred, strict=True):
            if lost_rows:
                out.append("work_lost")
            elif timed_out and not math.isfinite(first_work):
                out.append("expired")
            elif math.isfinite(first_work) or info is None or first is None:
                out.append("")
            else:  # no work seen: where it began before the timeline, its work lay before it or
                # went under another id (the scheduler hook's unknown-<pid>-<idx>): never a 0 J record
                began = info.start_s if info.start_s is not None else info.end_s
                out.append("not_covered" if began is not None and began < first else "")
        return out

    def provisional(self) -> RecordBatch:
        """Records of every live request (``final`` false), oldest first: what a stop leaves open.

        Attribute ``end_stated`` says ``end_s`` is the request's stated end (not its last work)."""
        live = self.requests.live()
        stated = [
            {"end_stated": "true"} if a.info is not None and a.info.end_s is not None else None for a in live
        ]
        slots = [a.slot for a in live]
        return build_records(self.requests, slots, self._context(), final=False, extra_attributes=stated)

    def record(self, request_id: str) -> RequestEnergy | None:
        """The provisional record of a live request (``final`` false), or None."""
        acc = self.requests.get(request_id)
        if acc is None:
            return None
        return build_records(self.requests, [acc.slot], self._context(), final=False)[0]

    def resume(self, saved: dict[str, Any], now_s: float) -> bool:
        """Take up a request a stopped sidecar stored as provisional (its ``to_json`` form).

        It continues with the energy it had; the stop's gap is lost work, so its final
        record will be ``energy_unknown`` (a lower bound). An end after ``now_s`` (another
        boot's clock) is dropped: the timeout ends it. False (nothing changed) if unusable.
        """
        try:
            rid = str(saved["request_id"])
            phase_j = np.array([float(saved["phase_j"].get(p.label, 0.0)) for p in _PHASES])
            busy_s = float(saved["busy_s"])
            attributes = {str(k): str(v) for k, v in dict(saved["attributes"]).items()}
            stated = attributes.pop("end_stated", "") == "true"  # else end_s is its last work
            end = float(saved["end_s"]) if stated and saved.get("end_s") is not None else None
            start = None if saved.get("start_s") is None else float(saved["start_s"])
            info = RequestInfo(
                rid,
                model=str(saved["model"]),
                operation=str(saved["operation"]),
                task=str(saved["task"]),
                start_s=start,
                end_s=end if end is not None and end <= now_s else None,
                prompt_tokens=int(saved["prompt_tokens"]),
                output_tokens=int(saved["output_tokens"]),
                unit=str(saved["unit"]),
                attributes={**attributes, "resumed": "true"},
            )
        except (KeyError, TypeError, ValueError, AttributeError, OverflowError):
            return False
        if not (np.isfinite(phase_j).all() and (phase_j >= 0).all() and math.isfinite(busy_s)):
            return False
        if self.requests.get(rid) is not None or rid in self._finalized:
            return False
        code = self.requests.code(rid)
        acc = self.requests.by_code(code)
        assert acc is not None
        acc.phase_j, acc.busy_s, acc.info, acc.lost_rows = phase_j, max(busy_s, 0.0), info, 1
        if info.end_s is not None:
            self.requests.schedule(code, info.end_s)
        return True
