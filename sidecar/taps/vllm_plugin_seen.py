"""Recent request ids the vLLM plugin receiver has claimed or finished: one bounded table.

A request the plugin emitted work for is *claimed* (the span handler must not add
its work again); a finished one is remembered so that a replayed ``fin`` row is
refused. Both facts live in one table of bits, one entry (and one string) per
request: two tables of 100,000 ids cost ~18 MB and held two copies of each id.
Beyond ``most`` ids the oldest are forgotten.
"""

from __future__ import annotations

from collections import OrderedDict

__all__ = ["MAX_SEEN", "SeenIds"]

MAX_SEEN = 100_000  # recent request ids kept (claimed and/or finished)
_CLAIMED, _FINISHED = 1, 2  # what is known about a recent id (bits)


class SeenIds:
    """Claimed and finished bits of the last ``most`` request ids, oldest forgotten first."""

    __slots__ = ("_bits", "most")

    def __init__(self, most: int = MAX_SEEN) -> None:
        if most < 1:
            raise ValueError(f"SeenIds needs room for at least one id, got {most}")
        self.most = most
        self._bits: OrderedDict[str, int] = OrderedDict()

    def claimed(self, request_id: str) -> bool:
        """Whether the plugin supplied this request's work."""
        return bool(self._bits.get(request_id, 0) & _CLAIMED)

    def finished(self, request_id: str) -> bool:
        """Whether a finish of this request was already taken."""
        return bool(self._bits.get(request_id, 0) & _FINISHED)

    def claim(self, request_id: str) -> None:
        self._mark(request_id, _CLAIMED)

    def finish(self, request_id: str) -> None:
        self._mark(request_id, _FINISHED)

    def _mark(self, request_id: str, bit: int) -> None:
        bits = self._bits
        bits[request_id] = bits.get(request_id, 0) | bit
        while len(bits) > self.most:
            bits.popitem(last=False)
