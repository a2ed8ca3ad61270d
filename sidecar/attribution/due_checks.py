"""When each live request is next worth a look: (time, code) entries, taken out once due.

Finalization looks only at requests whose check time has come (their stated end, or their last
work plus the timeout), never at every idle request. An entry is a hint: a request taken out is
checked, and put back with a later time if it is not done; entries of requests that ended are
skipped, and dropped once they are as many again as the live requests (amortized O(1) a put).

New entries wait in two lists (an append each); a look-up first sorts them and merges them into
two arrays sorted by time (one memory move of the entries waiting, 16 bytes each), then takes
the due ones as a prefix: a request costs a few appends and C-speed passes, not a heap push and
pop in Python each (``benchmarks/seal_rows.py`` prints both).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np

__all__ = ["DueChecks"]

Live = Callable[[np.ndarray], np.ndarray]  # codes -> whether each is live (bool array)


class DueChecks:
    """Check times of live requests' codes; :meth:`due` takes out those that have come."""

    __slots__ = ("_check_s", "_code", "_compact_at", "_new_check_s", "_new_code")

    def __init__(self) -> None:
        self._check_s = np.empty(0)  # sorted
        self._code = np.empty(0, dtype=np.int64)  # at the same positions
        self._new_check_s: list[float] = []  # not merged yet
        self._new_code: list[int] = []
        self._compact_at = 1024  # entries at which those of ended requests are dropped

    def __len__(self) -> int:
        """Entries held (bounded by a few per live request)."""
        return int(self._check_s.size) + len(self._new_code)

    def entries(self) -> list[tuple[float, int]]:
        """Every (check time, code) held, by time (a test's view)."""
        self._merge()
        return list(zip(self._check_s.tolist(), self._code.tolist(), strict=True))

    def put(self, code: int, check_s: float) -> bool:
        """Look at ``code`` again once the sealed time reaches ``check_s``; not if that is not finite
        ahead (inf, NaN). True if put."""
        if not check_s < math.inf:
            return False
        self._new_check_s.append(check_s)
        self._new_code.append(code)
        return True

    def put_many(self, codes: Sequence[int], check_s: list[float]) -> None:
        """:meth:`put` of each code at its time (the times checked at once, the lists extended)."""
        ahead = np.asarray(check_s, dtype=np.float64) < math.inf  # not inf, not NaN
        if ahead.all():
            self._new_check_s.extend(check_s)
            self._new_code.extend(codes)
            return
        for k in np.flatnonzero(ahead).tolist():
            self._new_check_s.append(check_s[k])
            self._new_code.append(codes[k])

    def due(self, until_s: float, live: Live) -> list[int]:
        """The live codes with a check time ``<= until_s``, ascending, each once (taken out); none
        until NaN (a time no check is at or before)."""
        if math.isnan(until_s):
            return []
        self._merge()
        k = int(np.searchsorted(self._check_s, until_s, side="right"))
        if not k:
            return []
        codes = self._code[:k]
        self._check_s, self._code = self._check_s[k:], self._code[k:]
        found: list[int] = np.unique(codes[live(codes)]).tolist()
        return found

    def compact(self, live: Live, n_live: int) -> None:
        """Drop the entries of ended requests once the entries are past their mark; the mark is then
        twice what is left (at least four per live request), so live requests with many entries (an
        end stated again and again) do not make every put a pass over all: amortized O(1) a put."""
        if len(self) <= self._compact_at:
            return
        self._merge()
        keep = live(self._code)
        self._check_s, self._code = self._check_s[keep], self._code[keep]
        self._compact_at = max(4 * n_live + 1024, 2 * len(self))

    def _merge(self) -> None:
        """The new entries into the sorted arrays."""
        if not self._new_code:
            return
        check_s = np.asarray(self._new_check_s, dtype=np.float64)
        code = np.asarray(self._new_code, dtype=np.int64)
        self._new_check_s, self._new_code = [], []
        order = np.argsort(check_s, kind="stable")
        check_s, code = check_s[order], code[order]
        at = np.searchsorted(self._check_s, check_s, side="right")
        self._check_s = np.insert(self._check_s, at, check_s)
        self._code = np.insert(self._code, at, code)
