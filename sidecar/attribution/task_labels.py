"""Tasks named by request id alone: a client span's ``jouletrace.request.id`` with its ``jouletrace.task``.

A client span names its request's task two ways. By trace: joined with vLLM's ``llm_request``
span of the same trace (:mod:`sidecar.taps.vllm_spans`). By id, when it carries the id the
client sent as ``X-Request-Id`` (the load generator's spans do): a :class:`TaskLabel`. The id
path needs nothing from the server's own spans, which a starved or restarting vLLM may never
send (its exporter gives a batch up after its deadline), while the request's work and end come
from the scheduler hook or plugin all the same.

The attributor takes a label (:meth:`~sidecar.attribution.engine.Attributor.add_request`):

* for a live request whose task is ``"unknown"``: the task is set now;
* for a request already final: a late task, as a late trace join is (the ledger and the API
  take it; the histograms already counted the request);
* for a request not seen yet: held here until its first info names it, at most
  :data:`MAX_HELD` labels (beyond: the oldest forgotten, counted ``task_label_unmatched``).

A label never replaces a known task, and never creates a request: a client span for a request
this sidecar does not see (another server's) must not make a record.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import replace
from typing import NamedTuple

from sidecar.attribution.events import RequestInfo

__all__ = ["MAX_HELD", "MAX_LATE", "HeldLabels", "Info", "TaskLabel", "labelled"]

# Labels for requests not seen yet (~200 B each with their key): a client span comes after its
# response, so its request is nearly always known by then; these are the exceptions.
MAX_HELD = 20_000
MAX_LATE = 100_000  # late tasks held between two ticks (beyond: refused, counted info_after_final)


class TaskLabel(NamedTuple):
    """A request's task, named by the request's id (sidecar form: the id the client sent)."""

    request_id: str
    task: str


Info = RequestInfo | TaskLabel  # what a tap hands to Attributor.add_request


class HeldLabels:
    """Tasks the attributor cannot set yet: labels waiting for their request's first info (oldest
    first, at most ``most``), and tasks named after a request was final, until the app takes them."""

    def __init__(self, most: int = MAX_HELD, most_late: int = MAX_LATE) -> None:
        self._held: OrderedDict[str, str] = OrderedDict()
        self._late: OrderedDict[str, str] = OrderedDict()  # id -> task named after final, until taken
        self.most = most
        self.most_late = most_late

    def __len__(self) -> int:
        """Labels held for requests not seen yet (not the late tasks)."""
        return len(self._held)

    def __contains__(self, request_id: object) -> bool:
        """Whether a label is held for ``request_id`` (:meth:`apply` would name its task)."""
        return request_id in self._held

    def hold(self, label: TaskLabel) -> bool:
        """Keep ``label`` until :meth:`apply` meets its request; True if that pushed the oldest held
        label out (beyond ``most``: its request was never seen here)."""
        self._held[label.request_id] = label.task
        if len(self._held) > self.most:
            self._held.popitem(last=False)
            return True
        return False

    def apply(self, info: RequestInfo) -> RequestInfo:
        """``info`` with the task a held label names for it, if it names none itself."""
        task = self._held.pop(info.request_id, None)
        if task is None or info.task != "unknown":
            return info
        return replace(info, task=task)

    def late(self, request_id: str, task: str) -> bool:
        """A task named for a final request, kept for :meth:`take_late`; False if none is taken
        (the task is unknown, or ``most_late`` wait already)."""
        if task == "unknown" or len(self._late) >= self.most_late:
            return False
        self._late[request_id] = task
        return True

    def take_late(self) -> dict[str, str]:
        """The late tasks (id -> task) named since the last call."""
        late, self._late = self._late, OrderedDict()
        return dict(late)


def labelled(info: RequestInfo | None, label: TaskLabel) -> RequestInfo | None:
    """A live request's info with the label's task; None if its task is known already."""
    if info is None:
        return RequestInfo(label.request_id, task=label.task)  # work seen, no info yet
    if info.task != "unknown":
        return None
    return replace(info, task=label.task, end_s=None)  # end_s: the info's own, kept (not re-scheduled)
