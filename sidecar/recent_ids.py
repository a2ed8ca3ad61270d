"""The last N distinct ids seen, to refuse a repeat: a set to look up, a deque for the order.

Half the memory of the ``OrderedDict[str, None]`` it replaces (CPython's ordered dict
adds a linked node per key; here a key costs a set slot and a deque slot, ~50 B
besides the string), with the same answers: an id is remembered until ``most`` newer
distinct ids have been added, then forgotten oldest first.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Hashable
from typing import Generic, TypeVar

__all__ = ["RecentIds"]

_K = TypeVar("_K", bound=Hashable)


class RecentIds(Generic[_K]):
    """A bounded set of recent ids, forgetting the oldest first."""

    __slots__ = ("_ids", "_order", "most")

    def __init__(self, most: int) -> None:
        if most < 1:
            raise ValueError(f"RecentIds needs room for at least one id, got {most}")
        self.most = most
        self._ids: set[_K] = set()
        self._order: deque[_K] = deque()

    def __contains__(self, key: object) -> bool:
        return key in self._ids

    def __len__(self) -> int:
        return len(self._ids)

    def add(self, key: _K) -> None:
        """Remember ``key`` (a repeat changes nothing); beyond ``most`` ids the oldest is forgotten."""
        self.add_new(key)

    def add_new(self, key: _K) -> bool:
        """:meth:`add`, and say whether ``key`` was new (one call for ``key in self`` and ``add``)."""
        if key in self._ids:
            return False
        self._ids.add(key)
        self._order.append(key)
        if len(self._order) > self.most:
            self._ids.discard(self._order.popleft())
        return True
