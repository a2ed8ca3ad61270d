"""The attributor: seals ticks of measured energy and shares them among requests.

Data flow (one direction): taps call :meth:`Attributor.add_work` and
:meth:`Attributor.add_request`; the app calls :meth:`Attributor.advance` with
the time up to which work is assumed complete (now minus ``settle_s``). Each
counter edge up to then closes a tick: the work events overlapping it are cut
out (:mod:`.tick`), the split rule shares the tick's measured energy
(:mod:`.rules`), and the shares are added to their requests. A request's record
becomes final once the sealed timeline covers its end plus one counter
update; :meth:`advance` returns the records that became final. Sealing is
:class:`~sidecar.attribution.sealing.TickSealer`'s, ending requests
:class:`~sidecar.attribution.lifecycle.RequestLifecycle`'s, taking work in
:class:`~sidecar.attribution.intake.WorkIntake`'s; this class holds them together.

Late work (for time already sealed) cannot change sealed ticks: the part before
the sealed horizon is dropped and counted, never silently re-attributed.
Conservation holds by construction and is checked: per tick, attributed +
idle == measured.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections import Counter
from collections.abc import Callable, Iterable

import numpy as np

from sidecar.attribution.events import WORK_LOST, RequestInfo, StepBatch, WorkEvent, WorkRows
from sidecar.attribution.intake import WorkIntake
from sidecar.attribution.lifecycle import FINALIZED_KEPT, RequestLifecycle
from sidecar.attribution.new_requests import first_seen
from sidecar.attribution.pending import PendingWork
from sidecar.attribution.record_batch import RecordBatch
from sidecar.attribution.requests import RequestTable
from sidecar.attribution.rules import SplitRule
from sidecar.attribution.sealing import TickSealer
from sidecar.attribution.step_curve import StepCurve
from sidecar.attribution.task_labels import HeldLabels, TaskLabel, labelled
from sidecar.attribution.tick import TickWork
from sidecar.attribution.totals import MAX_MODELS, Totals
from sidecar.recent_ids_sorted import SortedRecentIds
from sidecar.timeline import Timeline

__all__ = ["Attributor"]

DROP_REASONS = (
    "invalid",
    "late",
    "late_clipped",
    "after_final",
    "info_after_final",
    "task_late",  # final records named a task after final: ledger, API, waiting span; not the histograms
    "task_label_unmatched",  # tasks named by id for requests not seen here, forgotten (task_labels.MAX_HELD)
    "future",  # work or an end claimed beyond max_future_s ahead of the sealed time
    "pending_cap",  # work rows refused because max_pending_rows were pending
    "expired",  # requests ended by request_timeout_s without a stated end
    "evicted",  # requests ended early because max_requests were in flight
    "energy_unknown",  # final records whose work was lost (kept out of the histograms)
)
# Busy ticks held for the fit's warm-up keep their work rows (ten 8-byte values a row): a bound in
# rows as well as in ticks, so 150 ticks of a wide batch (4,096 members) cannot hold 49 MB.
MAX_HELD_ROWS = 100_000


class Attributor(WorkIntake, TickSealer, RequestLifecycle):
    """Splits a timeline's measured energy among the requests that did work."""

    def __init__(
        self,
        timeline: Timeline,
        rule: SplitRule,
        *,
        model: str = "unknown",
        energy_source: str = "measured",
        request_timeout_s: float = 600.0,
        max_held_ticks: int = 300,
        max_held_rows: int = MAX_HELD_ROWS,
        warmup_max_s: float = math.inf,
        max_requests: int | None = None,
        max_pending_rows: int | None = None,
        max_future_s: float = math.inf,
        max_model_labels: int = MAX_MODELS,
        unix_offset: Callable[[], float] = lambda: time.time() - time.monotonic(),
    ) -> None:
        self.timeline = timeline
        self.rule = rule
        self.model = model
        self.energy_source = energy_source
        self.request_timeout_s = request_timeout_s
        self._unix_offset = unix_offset
        self.requests = RequestTable(request_timeout_s)
        self.warmup_max_s = warmup_max_s  # seconds busy ticks may wait for the fit (then: fallback)
        self.max_requests = max_requests  # in-flight cap; the oldest is evicted (counted)
        self.max_pending_rows = max_pending_rows  # pending work cap; newer rows refused (counted)
        self.max_future_s = max_future_s  # work or ends beyond sealed time + this are refused
        self.max_held_rows = max_held_rows  # work rows in held ticks (80 B each); beyond: split now
        self._first_sealed_t: float | None = None
        self.totals = Totals(len(timeline.devices), max_models=max_model_labels, model=model)
        # every reason exported from the start, so a rate() has a series before the first drop
        self.dropped: Counter[str] = Counter(dict.fromkeys(DROP_REASONS, 0))
        self._new: list[tuple[float, float, float, float, float, float, float, float]] = []
        self._new_steps: list[np.ndarray] = []  # step batches: rows of the same 8 columns
        self._last_step_codes: tuple[tuple[str, ...], np.ndarray] | None = None  # ids -> codes, until advance
        self._pending = PendingWork()
        self._done_codes = np.empty(0, dtype=np.int64)  # found final, records not built yet (_finalize)
        self._done_inferred = np.empty(0, dtype=bool)
        self._curves: list[StepCurve] = []  # step curves of clocked rows, by their code
        self._sealed_t: float | None = None  # time of the last sealed edge
        self._sealed_e = 0.0
        self._sealed_e_dev = np.zeros(len(timeline.devices))
        self._finalized: SortedRecentIds[str] = SortedRecentIds(FINALIZED_KEPT)  # recent final ids (bounded)
        self._labels = HeldLabels()  # tasks named by id for requests not seen yet, or after final
        self._held: list[tuple[TickWork, np.ndarray]] = []  # busy ticks waiting for a learning rule
        self.max_held_ticks = max_held_ticks

    # ---- ingest (cheap: called per event; work: WorkIntake) ------------------
    def ingest(
        self, events: Iterable[WorkEvent | StepBatch | WorkRows], infos: Iterable[RequestInfo | TaskLabel]
    ) -> None:
        """One source's output of a tick: the infos first, so a request met here gets its row with
        its stated end (one check scheduled, not a timeout check too) and its work finds the row."""
        self.add_requests(infos)
        for event in events:
            self.add_work(event)

    def add_requests(self, infos: Iterable[RequestInfo | TaskLabel]) -> None:
        """:meth:`add_request` of each in turn; a run of infos of requests first seen (not final, no
        label held for them, an end in bounds, no lost work, no id twice) goes into the table at once
        (:meth:`RequestTable.add_new`), as those calls would leave it."""
        items = list(infos)
        ids = [info.request_id for info in items]
        finals = self._finalized.contains_many(ids)
        new = first_seen(items, ids, finals, self.requests.ids(), self._labels, self._latest_end_s())
        if new is not None:  # the usual span export: one run, no test an info
            self.requests.add_new(new)
            return
        final: list[bool] = finals.tolist()
        run: dict[str, RequestInfo] = {}
        for info, is_final in zip(items, final, strict=True):
            rid = info.request_id
            if (
                is_final
                or isinstance(info, TaskLabel)
                or rid in run
                or rid in self.requests
                or (self._labels and rid in self._labels)
                or self._too_far(info.end_s)
                or info.attributes.get(WORK_LOST) == "true"
            ):
                self.requests.add_new(list(run.values()))  # the run first: the table as in order
                run.clear()
                self.add_request(info)
            else:
                run[rid] = info
        self.requests.add_new(list(run.values()))

    def add_request(self, info: RequestInfo | TaskLabel) -> None:
        """Record or update what is known about a request (model, task, tokens, end).

        After the request's record is final only a task is still taken (a client span that came
        late): it waits for :meth:`take_late_tasks`; anything else is refused and counted. A
        :class:`~sidecar.attribution.task_labels.TaskLabel` (a task named by id alone) names the
        task of a live request, or of a final one, or waits for the request's first info.
        """
        if info.request_id in self._finalized:
            if not self._labels.late(info.request_id, info.task):
                self.dropped["info_after_final"] += 1
            return
        if isinstance(info, TaskLabel):
            self._label(info)
            return
        if self._labels:
            info = self._labels.apply(info)
        if self._too_far(info.end_s):
            self.dropped["future"] += 1  # an end far ahead: ignore it, the timeout ends the request
            info = dataclasses.replace(info, end_s=None)
        self.requests.set_info(info.request_id, info)
        if info.attributes.get(WORK_LOST) == "true":  # a tap lost some of its work: energy unknown
            acc = self.requests.get(info.request_id)
            if acc is not None:
                acc.lost_rows += 1

    def _too_far(self, end_s: float | None) -> bool:
        """Whether a stated end lies beyond :meth:`_latest_end_s`."""
        return end_s is not None and end_s > self._latest_end_s()

    def _latest_end_s(self) -> float:
        """The latest stated end taken: the sealed time + ``max_future_s`` (inf, no bound, before the
        first seal)."""
        sealed_s = self.requests.now_s  # -inf before the first seal
        return sealed_s + self.max_future_s if sealed_s > -math.inf else math.inf

    def _label(self, label: TaskLabel) -> None:
        """A task named by id: set on the live request, or held until the request is first seen."""
        live = self.requests.get(label.request_id)
        if live is None:
            if self._labels.hold(label):
                self.dropped["task_label_unmatched"] += 1
            return
        info = labelled(live.info, label)
        if info is not None:
            self.requests.set_info(label.request_id, info)

    def take_late_tasks(self) -> dict[str, str]:
        """Tasks named for requests already final (id -> task) since the last call; the caller
        sets them on the stored records. The energy and the metrics already observed stay."""
        return self._labels.take_late()

    def count_late_tasks(self, named: int) -> None:
        """``named`` final records took a late task (theirs was unknown: the per-task metrics counted
        them under "unknown"); a late task for a record that has one already is no loss, not counted."""
        self.dropped["task_late"] += named

    # ---- progress -------------------------------------------------------------
    def is_final(self, request_id: str) -> bool:
        """Whether ``request_id`` is among the recent final ids (its later work is refused)."""
        return request_id in self._finalized

    def backlog_rows(self) -> int:
        """Work rows not split yet: new, pending, in ticks held for the fit (a count; any thread)."""
        new, steps, held = self._new, self._new_steps, self._held  # read once: the tick may swap them
        n_held = sum(tick.req.size for tick, _ in held)
        return len(new) + sum(len(rows) for rows in steps) + len(self._pending) + n_held

    @property
    def sealed_until_s(self) -> float | None:
        """End of the last sealed tick (s), None before the first counter edge."""
        return self._sealed_t

    def advance(self, seal_until_s: float, most_final: int | None = None) -> RecordBatch:
        """Seal every tick that ends by ``seal_until_s``; return records that became final. With
        ``most_final``, the records of at most that many of the requests found final, the oldest
        first (and of those evicted over ``max_requests``); the others wait for the next call
        (:attr:`finals_left`; the same ``seal_until_s`` seals nothing more), which builds theirs
        first: a caller that hands on each batch before it asks for the next holds one batch of
        records, not every record a burst made final (the sidecar's tick:
        :data:`sidecar.app.FINAL_BATCH`)."""
        if most_final is not None and most_final < 1:
            raise ValueError(f"most_final must be at least 1, not {most_final}")
        self._last_step_codes = None  # finalizing below frees codes
        t_edges, e_edges, e_dev_edges = self.timeline.edges_after(
            self._sealed_t if self._sealed_t is not None else float("-inf")
        )
        keep = t_edges <= seal_until_s
        t_edges, e_edges, e_dev_edges = t_edges[keep], e_edges[keep], e_dev_edges[keep]
        if self._sealed_t is None:
            if t_edges.size == 0:  # no counter update yet (a meter stalled or lost at start): caps hold
                self._cap_new_rows()
                return self._evict()
            self._sealed_t, self._sealed_e = float(t_edges[0]), float(e_edges[0])
            self._sealed_e_dev = e_dev_edges[0].copy()
            self._first_sealed_t = self._sealed_t
            t_edges, e_edges, e_dev_edges = t_edges[1:], e_edges[1:], e_dev_edges[1:]
        self._merge_new(seal_until_s)
        window = self._pending.before(float(t_edges[-1])) if t_edges.size else None  # work these ticks touch
        for t, e, e_dev in zip(t_edges.tolist(), e_edges.tolist(), e_dev_edges, strict=True):
            assert window is not None
            self._seal(window, t, e - self._sealed_e, e_dev - self._sealed_e_dev)
            self._sealed_t, self._sealed_e, self._sealed_e_dev = t, e, e_dev.copy()
        self.requests.now_s = self._sealed_t
        self._drop_consumed()
        if self._held and (
            self.rule.ready
            or len(self._held) >= self.max_held_ticks
            or sum(tick.req.size for tick, _ in self._held) >= self.max_held_rows
            or (self._sealed_t or 0.0) - self._held[0][0].t0_s >= self.warmup_max_s
            or seal_until_s == math.inf
        ):
            self._release_held()
        if self._held:  # nothing final before the held ticks are split; the request cap holds
            return self._evict()
        return self._finalize(most_final) + self._evict()
