"""The scheduler-hook receiver's per-request state: a request's ids and arrival, and its slot in
arrays that a step's members are read and updated through at once."""

from __future__ import annotations

import numpy as np

from sidecar.contracts.scheduler_wire import NewRow

__all__ = ["Req", "Slots"]


class Req:
    """One request: its ids, arrival and its slot in the receiver's per-request arrays."""

    __slots__ = ("arrival_s", "raw", "request_id", "slot")

    def __init__(self, row: NewRow, request_id: str, base_s: float, slot: int) -> None:
        self.raw = row.request_id
        self.request_id = request_id
        self.arrival_s = base_s - row.arrival_ago_s
        self.slot = slot


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
