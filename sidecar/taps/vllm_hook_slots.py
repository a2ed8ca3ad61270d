"""The scheduler-hook receiver's per-request state: a request's ids and arrival, and its slot in
arrays that a step's members are read and updated through at once."""

from __future__ import annotations

import numpy as np

from sidecar.attribution.events import WORK_LOST
from sidecar.contracts.scheduler_wire import NewRow

__all__ = ["Family", "Req", "Slots"]


class Req:
    """One request: its ids, arrival and its slot in the receiver's per-request arrays.

    A parallel-sampling child (vLLM's ``<i>_<parent id>``: one engine request per sequence of
    an ``n > 1`` request) goes by its parent's id (``family``: the key of its :class:`Family`)."""

    __slots__ = ("arrival_s", "family", "raw", "request_id", "slot")

    def __init__(
        self, row: NewRow, request_id: str, base_s: float, slot: int, family: str | None = None
    ) -> None:
        self.raw = row.request_id
        self.request_id = request_id
        self.arrival_s = base_s - row.arrival_ago_s
        self.slot = slot
        self.family = family


class Family:
    """The children of one parallel-sampling request in flight: one record, their tokens summed."""

    __slots__ = ("arrival_s", "end_s", "live", "lost", "output_tokens", "raw", "reason", "request_id", "size")

    def __init__(self, raw: str, request_id: str, arrival_s: float) -> None:
        self.raw = raw  # the parent's vLLM id (e.g. cmpl-<X-Request-Id>-0)
        self.request_id = request_id  # the id its record goes by
        self.arrival_s = arrival_s
        self.end_s = float("nan")  # the last end of a child so far
        self.live = 0  # children in flight
        self.size = 0  # children seen
        self.output_tokens = 0  # of the children ended
        self.reason = ""  # the finish reason of the last child ended
        self.lost = False  # a child's work may be short (a datagram lost)

    def child_ended(self, output_tokens: int, end_s: float, reason: str, lost: bool) -> bool:
        """A child ended (its tokens, last step's end, finish reason): True if it was the last."""
        self.live -= 1
        self.output_tokens += output_tokens
        if not self.end_s >= end_s:  # (NaN: none ended before)
            self.end_s = end_s
        self.reason, self.lost = reason, self.lost or lost
        return self.live <= 0

    def attributes(self) -> dict[str, str]:
        """The record's attributes: the parent's vLLM id, the last finish reason, the children."""
        out = {"vllm.request_id": self.raw, "finish_reason": self.reason, "vllm.n": str(self.size)}
        if self.lost:
            out[WORK_LOST] = "true"
        return out


class Slots:
    """Per-request state as arrays (a step's members are read and updated at once)."""

    def __init__(self, capacity: int = 1024) -> None:
        self.ids: list[str] = [""] * capacity
        self.prompt = np.zeros(capacity, dtype=np.int64)
        self.high = np.zeros(capacity, dtype=np.int64)  # furthest KV position reached
        self.last_k = np.zeros(capacity, dtype=np.int64)  # tokens in its previous step
        self.end_s = np.full(capacity, np.nan)  # end of its last step
        self.live = np.zeros(capacity, dtype=bool)  # not finished yet
        self.free = list(range(capacity - 1, -1, -1))

    def take(self, request_id: str, prompt: int) -> int:
        if not self.free:
            n = len(self.ids)
            self.ids += [""] * n
            self.prompt, self.high, self.last_k = (
                np.concatenate([a, np.zeros(n, np.int64)]) for a in (self.prompt, self.high, self.last_k)
            )
            self.end_s = np.concatenate([self.end_s, np.full(n, np.nan)])
            self.live = np.concatenate([self.live, np.zeros(n, dtype=bool)])
            self.free = list(range(2 * n - 1, n - 1, -1))
        slot = self.free.pop()
        self.ids[slot] = request_id
        self.prompt[slot], self.high[slot], self.last_k[slot], self.end_s[slot] = prompt, 0, 0, np.nan
        self.live[slot] = True
        return slot
