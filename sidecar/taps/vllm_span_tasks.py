"""The task of a vLLM request span, from a client span of the same trace or one naming its request.

A client (the load generator, an instrumented app) sends a span with ``jouletrace.task``; vLLM
sends the ``llm_request`` span of the request it served in the same trace. Either may come
first: :class:`TaskJoins` keeps each client span's task by trace id for request spans to come,
and each request span without one waiting (at most ``wait_s``) for its client span, which then
names the request's task with a :class:`~sidecar.attribution.task_labels.TaskLabel`. A client
span that also names its request (``jouletrace.request.id``: the id sent as ``X-Request-Id``)
labels that request by id, which needs no ``llm_request`` span. Both tables are bounded;
what they forget is counted. The waiting request spans are kept as arrays (:mod:`.task_waits`).
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable

from sidecar.attribution.task_labels import TaskLabel
from sidecar.contracts.span_attributes import CLIENT_REQUEST_ID
from sidecar.contracts.span_attributes import TASK as TASK_ATTRIBUTE
from sidecar.recent_ids import remember
from sidecar.taps import validate as v
from sidecar.taps.spans import ReceivedSpan, TapOutput
from sidecar.taps.task_waits import WaitingSpans

__all__ = ["MAX_REMEMBERED", "MAX_WAITING", "TASK_ATTRIBUTE", "TaskJoins"]

MAX_REMEMBERED = 50_000  # client spans' tasks kept by trace id
# Request spans waiting for a task at most (~60 B each): 30 s at 667 requests/s, more than one
# node's vLLM servers finish; beyond, the oldest are forgotten (counted: task_wait_evicted). A trace
# may hold several (an agent's calls, a completions request's prompts): one join names them all.
MAX_WAITING = 20_000


class TaskJoins:
    """Tasks by trace id, request spans waiting for one, and what was joined, by id or forgotten."""

    def __init__(self, wait_s: float, monotonic: Callable[[], float] = time.monotonic) -> None:
        self.wait_s = wait_s  # how long a request span without a task waits for its client span
        self._monotonic = monotonic
        self._task_by_trace: OrderedDict[str, str] = OrderedDict()
        # requests awaiting a task, by trace id: a join names the task of each by id
        self._waiting = WaitingSpans(MAX_WAITING)
        self.joined = 0  # request spans given their trace's task (either arrival order)
        self.by_id = 0  # client spans that named their request's task by id (TaskLabel)
        self.client_ids_rejected = 0  # ... whose request id was not a printable id (joined by trace only)
        self.wait_expired = 0  # request spans whose client span did not come within wait_s
        self.wait_evicted = 0  # ... or were pushed out by MAX_WAITING newer ones

    def counts(self) -> dict[str, int]:
        """The counters, by the names the span handler reports them under."""
        return {
            "tasks_joined": self.joined,
            "tasks_by_id": self.by_id,
            "client_ids_rejected": self.client_ids_rejected,
            "task_wait_expired": self.wait_expired,
            "task_wait_evicted": self.wait_evicted,
        }

    def task_of(self, trace_id: str, request_id: str, handled_s: float) -> str:
        """A request span's task; ``"unknown"`` for now if its trace has none yet (it then waits, from
        ``handled_s``, for a client span that names it)."""
        return self.task_of_many([trace_id], [request_id], handled_s)[0]

    def task_of_many(self, trace_ids: list[str], request_ids: list[str], handled_s: float) -> list[str]:
        """:meth:`task_of` of each pair, in turn (a batch of request spans)."""
        known = self._task_by_trace.get
        tasks = [known(trace, "unknown") for trace in trace_ids]
        untasked = [i for i, task in enumerate(tasks) if task == "unknown"]
        self.joined += len(tasks) - len(untasked)
        if len(untasked) < len(tasks):
            trace_ids, request_ids = [trace_ids[i] for i in untasked], [request_ids[i] for i in untasked]
        self.wait_evicted += self._waiting.add_many(trace_ids, request_ids, handled_s)  # the oldest first
        return tasks

    def client_span(self, span: ReceivedSpan, out: TapOutput) -> None:
        """A client span with a task: labels for its request (by id) and its trace's request span."""
        task = v.request_id(span.attributes[TASK_ATTRIBUTE], TASK_ATTRIBUTE)  # a metric label
        if task == "unknown":  # names nothing (it took the trace's waiting request spans from the real one)
            return
        named = self._by_id(span.attributes.get(CLIENT_REQUEST_ID), task, out)
        remember(self._task_by_trace, span.trace_id, task, MAX_REMEMBERED)
        for request_id in self._waiting.take(span.trace_id):  # the request spans came first, without a task
            self.joined += 1
            if request_id != named:
                out.infos.append(TaskLabel(request_id, task))

    def _by_id(self, request_id: object, task: str, out: TapOutput) -> str | None:
        """A client span's task by the request id it names, if it names one; returns that id (a bad
        id: counted, None, and the trace join still names the task)."""
        if request_id is None or task == "unknown":
            return None
        try:
            label = TaskLabel(v.request_id(request_id, CLIENT_REQUEST_ID), task)
        except v.Rejected:
            self.client_ids_rejected += 1
            return None
        out.infos.append(label)
        self.by_id += 1
        return label.request_id

    def expire(self) -> float:
        """Forget the request spans that waited over ``wait_s`` for a task (counted; those sealed together
        in :mod:`.task_waits`, handled within a second, wait as long as the last of them); returns now."""
        now_s = self._monotonic()
        self.wait_expired += self._waiting.expire(now_s - self.wait_s)
        return now_s
