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
from collections import Counter, OrderedDict
from collections.abc import Callable
from typing import Any

import numpy as np

from sidecar.attribution.events import Phase, RequestInfo
from sidecar.attribution.records import RequestEnergy
from sidecar.attribution.requests import Accumulator, RequestTable, build_record
from sidecar.attribution.rules import SplitRule
from sidecar.attribution.tick import EventArrays
from sidecar.attribution.totals import Totals
from sidecar.timeline import Timeline

__all__ = ["RequestLifecycle"]

_EPS_S = 1e-9  # float slack when comparing times (s)
_PHASES = (Phase.PREFILL, Phase.DECODE, Phase.DENOISE)
_FINALIZED_KEPT = 100_000  # recent final ids remembered to refuse their late work


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
    _pending: EventArrays
    _sealed_t: float | None
    _first_sealed_t: float | None
    _finalized: OrderedDict[str, None]

    def _finalize(self) -> list[RequestEnergy]:
        """Records that became final: only requests whose check time has come are looked at."""
        sealed = self._sealed_t
        if sealed is None:
            return []
        period = self.timeline.update_period_s() or 0.0
        table = self.requests
        due = table.due(sealed)
        if not due:
            return []
        live_work = set(np.unique(self._pending.req).tolist()) if len(self._pending) else set()
        out: list[RequestEnergy] = []
        later: list[tuple[int, float]] = []
        for code in due:
            acc = table.by_code(code)
            assert acc is not None
            end = acc.info.end_s if acc.info is not None else None
            if end is None:
                if acc.seen_s == -math.inf:  # seen before the first seal: as if seen then
                    acc.seen_s = self._first_sealed_t if self._first_sealed_t is not None else sealed
                last = max(acc.last_t, acc.seen_s)
                if sealed - last < self.request_timeout_s:
                    later.append((code, last + self.request_timeout_s))
                    continue
                self.dropped["expired"] += 1
            elif sealed < end + period - _EPS_S:
                later.append((code, end + period))
                continue
            elif code in live_work:
                later.append((code, sealed))  # work after its stated end is still pending
                continue
            out.append(self._final(acc, end_inferred=end is None))
        for code, check_s in later:
            table.schedule(code, check_s)
        return out

    def _evict(self) -> list[RequestEnergy]:
        """Over ``max_requests`` in flight: the oldest end now, counted, their energy unknown."""
        out: list[RequestEnergy] = []
        while self.max_requests is not None and len(self.requests) > self.max_requests:
            acc = self.requests.oldest()
            assert acc is not None
            self.dropped["evicted"] += 1
            out.append(self._final(acc, end_inferred=True, unknown="evicted"))
        return out

    def _final(self, acc: Accumulator, *, end_inferred: bool, unknown: str = "") -> RequestEnergy:
        """Build a request's final record, forget it, and count its output."""
        if not unknown:
            unknown = self._unknown_reason(acc)
        if unknown:
            self.dropped["energy_unknown"] += 1
        record = self._record(acc.request_id, final=True, end_inferred=end_inferred, unknown=unknown)
        self._forget(acc.request_id)
        if record.output_units > 0 and not unknown and self._sealed_t is not None:
            self.totals.add_output(self._sealed_t, record.model, record.unit, record.output_units)
        return record

    def _unknown_reason(self, acc: Accumulator) -> str:
        """Why a request's energy is unknown ('' if known): its work was lost or never covered."""
        if acc.lost_rows:
            return "work_lost"
        info, first = acc.info, self._first_sealed_t
        if np.isfinite(acc.first_t) or info is None or first is None:
            return ""
        end = info.end_s if info.end_s is not None else info.start_s
        return "not_covered" if end is not None and end < first else ""

    def provisional(self) -> list[RequestEnergy]:
        """Records of every live request (``final`` false), oldest first: what a stop leaves open.

        Attribute ``end_stated`` says ``end_s`` is the request's stated end (not its last work)."""
        return [
            self._record(
                acc.request_id, final=False, stated=acc.info is not None and acc.info.end_s is not None
            )
            for acc in self.requests.live()
        ]

    def _forget(self, request_id: str) -> None:
        self.requests.remove(request_id)
        self._finalized[request_id] = None
        while len(self._finalized) > _FINALIZED_KEPT:
            self._finalized.popitem(last=False)

    def _record(
        self,
        request_id: str,
        *,
        final: bool,
        end_inferred: bool = False,
        unknown: str = "",
        stated: bool = False,
    ) -> RequestEnergy:
        acc = self.requests.get(request_id)
        assert acc is not None
        extra = {"end_inferred": "true"} if end_inferred else {}
        if unknown:
            extra |= {"energy_unknown": "true", "energy_unknown_reason": unknown}
        if stated:
            extra["end_stated"] = "true"
        end = acc.info.end_s if acc.info is not None and acc.info.end_s is not None else None
        return build_record(
            acc,
            final=final,
            default_model=self.model,
            rule=self.rule.name,
            energy_source=self.energy_source,
            update_period_s=self.timeline.update_period_s(),
            end_unix_s=None if end is None else end + self._unix_offset(),
            extra_attributes=extra or None,
            interval_j=self.rule.interval_j(float(acc.phase_j.sum()), acc.work, acc.unexplained_j),
            fit_quality="warmup" if acc.warmup_split else self.rule.quality(),
        )

    def record(self, request_id: str) -> RequestEnergy | None:
        """The provisional record of a live request (``final`` false), or None."""
        if self.requests.get(request_id) is None:
            return None
        return self._record(request_id, final=False)

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
