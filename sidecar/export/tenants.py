"""Bounded tenant labels: the heaviest tenants by energy get their own series, the rest ``other``.

A tenant label comes from the client (a header or the OpenAI ``user`` field),
so its values are unbounded; a metric label must not be. :class:`TenantLabels`
counts every tenant's energy, named or not, in a table of at most ``tracked``
tenants (Space-Saving: a new tenant in a full table takes the smallest one's
place and count, so a heavy tenant is never missed; its count may be too high
by at most that smallest count, about ``1 / tracked`` of the energy seen).

While no more than ``top_n`` tenants have been seen, each has a series of its own (is
*named*) from its first record. After, a tenant is named once (with more than
``EVIDENCE_RECORDS_PER_SLOT * top_n`` records with a tenant seen) it is among
the ``top_n`` heaviest tracked and holds at least ``1 / (4 top_n)`` of the
energy seen. While fewer than ``top_n`` are named it takes a free slot; when
all are taken, it takes the slot of the named tenant with the least tracked
energy, if it has more than ``SWAP_MARGIN`` times that. The tenant put out is
*retired*: :attr:`TenantLabels.retired` lists it until the caller drains it
and ends its series; its later energy is ``other``. Every other tenant is
``other``, a request without a tenant ``none``. So the series per model are at
most ``top_n + 2``, whatever the clients send, and a flood of one-off tenants
cannot take the slots: a one-off tenant's count is about ``1 / tracked`` of
the energy seen, below the ``1 / (4 top_n)`` needed.

Per record: a dictionary update and, for a tenant new to a full table, a heap
pop (the smallest count, kept lazily). A promotion is considered (a scan of the
table) only when a tenant's count passes both the last known ``top_n``-th
largest count and ``SWAP_MARGIN`` times the last known weakest named count;
both only grow, so they stay valid bars until a scan renews them.
"""

from __future__ import annotations

import heapq

__all__ = ["EVIDENCE_RECORDS_PER_SLOT", "NO_TENANT", "OTHER", "SWAP_MARGIN", "TenantLabels"]

OTHER = "other"
NO_TENANT = "none"

# With more tenants than slots, no tenant is named before more than this many records with a tenant
# per slot are seen (with fewer, every tenant has a slot: nothing to decide). The first
# tenant seen holds 100 % of the energy seen, and up to 4 top_n records a single record among equals
# is already 1 / (4 top_n) of it: a share measured on so few says nothing about who is heavy.
EVIDENCE_RECORDS_PER_SLOT = 4
# A tenant takes a named slot only with more than this times the weakest named tenant's energy:
# two tenants of about equal weight then never trade the slot back and forth (each trade ends a
# series and starts one), while a tenant twice as heavy still gets it.
SWAP_MARGIN = 2.0


class TenantLabels:
    """Maps tenants to bounded labels (see the module docstring)."""

    def __init__(self, top_n: int = 10, tracked: int | None = None) -> None:
        self.top_n = top_n
        self.tracked = tracked if tracked is not None else max(8 * top_n, 64)
        self.retired: list[str] = []  # tenants put out of a named slot; the caller drains it
        self._energy_j: dict[str, float] = {}  # Space-Saving counts, named tenants too
        self._heap: list[tuple[float, str]] = []  # one entry per tracked tenant, its count or less
        self._named: set[str] = set()
        self._total_j = 0.0
        self._records = 0  # records with a tenant
        self._evidence_records = EVIDENCE_RECORDS_PER_SLOT * top_n
        # lower bounds, renewed by each scan: the top_n-th largest count; SWAP_MARGIN times the
        # weakest named count (0 when unknown: a named tenant left the table or a slot was taken)
        self._top_bar_j = 0.0
        self._swap_bar_j = 0.0

    def label(self, tenant: str | None, energy_j: float) -> str:
        """Count ``energy_j`` for ``tenant``; the label its series carry."""
        if not tenant:
            return NO_TENANT
        self._records += 1
        self._total_j += energy_j
        count_j = self._count(tenant, energy_j)
        if tenant in self._named:
            return tenant
        if len(self._energy_j) <= self.top_n:  # a slot for every tenant seen: nothing to decide
            return tenant if self._promote(tenant, count_j) else OTHER
        if self._records <= self._evidence_records or count_j * 4 * self.top_n < self._total_j:
            return OTHER
        if count_j < self._top_bar_j:  # top_n others are heavier
            return OTHER
        if len(self._named) >= self.top_n and count_j <= self._swap_bar_j:
            return OTHER
        return tenant if self._promote(tenant, count_j) else OTHER

    def _count(self, tenant: str, energy_j: float) -> float:
        """Add ``energy_j`` to ``tenant``'s count (Space-Saving); its count now."""
        table = self._energy_j
        count_j = table.get(tenant)
        if count_j is not None:
            count_j = table[tenant] = count_j + energy_j
            return count_j
        if len(table) < self.tracked:
            table[tenant] = energy_j
            heapq.heappush(self._heap, (energy_j, tenant))
            return energy_j
        smallest, floor_j = self._pop_smallest()
        if smallest in self._named:  # its count reads 0 from now on: the swap bar no longer holds
            self._swap_bar_j = 0.0
        count_j = table[tenant] = floor_j + energy_j
        heapq.heappush(self._heap, (count_j, tenant))
        return count_j

    def _pop_smallest(self) -> tuple[str, float]:
        """Take the tenant with the smallest count out of the table; it and its count.

        A heap entry is its tenant's count when pushed; counts only grow, so an entry whose count is
        current is the smallest. A stale one is pushed again with its count (once per increment at
        most, so the pops cost O(log tracked) a record, amortized)."""
        heap, table = self._heap, self._energy_j
        while True:
            entry_j, tenant = heap[0]
            count_j = table[tenant]
            if count_j == entry_j:
                heapq.heappop(heap)
                del table[tenant]
                return tenant, count_j
            heapq.heapreplace(heap, (count_j, tenant))

    def _promote(self, tenant: str, count_j: float) -> bool:
        """Name ``tenant`` if it is among the ``top_n`` heaviest and a slot is free or its weakest
        holder has less than 1 / ``SWAP_MARGIN`` of ``count_j`` (retired then); whether named."""
        if tenant in (OTHER, NO_TENANT):  # its series would be the shared one
            return False
        table = self._energy_j
        weakest = None
        if len(self._named) >= self.top_n:
            weakest = min(self._named, key=lambda t: table.get(t, 0.0))
            self._swap_bar_j = SWAP_MARGIN * table.get(weakest, 0.0)
            if not count_j > self._swap_bar_j:  # (not <=: an infinite margin times 0 J is NaN)
                return False
        largest = heapq.nlargest(self.top_n, table.values())
        self._top_bar_j = largest[-1] if len(largest) >= self.top_n else 0.0
        if count_j < self._top_bar_j:
            return False
        if weakest is None:
            self._swap_bar_j = 0.0  # unknown until the slots are full and scanned
        else:  # the swap bar stays a lower bound: no named count is below the weakest's
            self._named.remove(weakest)
            self.retired.append(weakest)
        self._named.add(tenant)
        return True

    def drain_retired(self) -> list[str]:
        """The tenants retired since the last drain (their series should end), emptied."""
        out, self.retired = self.retired, []
        return out

    @property
    def named(self) -> frozenset[str]:
        """Tenants with a series of their own."""
        return frozenset(self._named)
