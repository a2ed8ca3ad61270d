"""The requests the vLLM plugin sees decoding, and each iteration's decode work as one :class:`StepBatch`.

Continuous batching: every request whose prefill has finished and that has not finished yet
decodes one token in each iteration, reading a KV cache of ``prompt + generated`` tokens.
Membership lives in a dict (request id -> prompt tokens, iterations before it started); the
parallel arrays an iteration needs are rebuilt only when membership changes, and the same
``request_ids`` tuple is handed on while it does not (the attributor reuses its codes). So an
iteration of 4,096 members is a few array operations, not 4,096 :class:`WorkEvent` objects.
Units: tokens.
"""

from __future__ import annotations

import numpy as np

from sidecar.attribution.events import Phase, StepBatch

__all__ = ["DecodingRequests"]


class DecodingRequests:
    """Requests in decode, oldest first; :meth:`step` is one iteration's work for all of them."""

    def __init__(self) -> None:
        self._rows: dict[str, tuple[int, int]] = {}  # id -> (prompt tokens, iterations before its start)
        self._iterations = 0  # iterations seen since the receiver started
        self._ids: tuple[str, ...] | None = None  # the arrays' members; None: membership changed since
        self._prompt = self._start = np.zeros(0, dtype=np.int64)
        self._phase = np.zeros(0, dtype=np.int64)
        self._units = np.zeros(0)

    def __len__(self) -> int:
        return len(self._rows)

    def __contains__(self, request_id: object) -> bool:
        return request_id in self._rows

    def ids(self) -> list[str]:
        """The requests decoding, oldest first."""
        return list(self._rows)

    def add(self, request_id: str, prompt_tokens: int) -> None:
        """A request whose first token came (generated so far: 1)."""
        self._rows[request_id] = (prompt_tokens, self._iterations)
        self._ids = None

    def remove(self, request_id: str) -> bool:
        """Take a request out (finished, aborted); False if it was not decoding."""
        if self._rows.pop(request_id, None) is None:
            return False
        self._ids = None
        return True

    def remove_oldest(self) -> None:
        del self._rows[next(iter(self._rows))]
        self._ids = None

    def drain(self) -> list[tuple[str, int, int]]:
        """Every request (id, prompt tokens, tokens generated so far), oldest first; then none are left."""
        rows, self._rows, self._ids = self._rows, {}, None
        return [(rid, prompt, 1 + self._iterations - start) for rid, (prompt, start) in rows.items()]

    def step(self, t0_s: float, t1_s: float) -> StepBatch | None:
        """One iteration over ``[t0_s, t1_s]``: one decode token per member (None without members)."""
        if not self._rows:
            self._iterations += 1
            return None
        if self._ids is None:
            self._ids = tuple(self._rows)
            table = np.array(list(self._rows.values()), dtype=np.int64).reshape(-1, 2)
            self._prompt, self._start = table[:, 0], table[:, 1]
            self._phase = np.full(len(self._ids), int(Phase.DECODE), dtype=np.int64)
            self._units = np.ones(len(self._ids))
        kv_tokens = (self._prompt + (1 + self._iterations) - self._start).astype(np.float64)
        self._iterations += 1
        return StepBatch(t0_s, t1_s, self._ids, self._phase, self._units, kv_tokens)
