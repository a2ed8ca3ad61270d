"""Bounded tenant labels: the heaviest tenants by energy get their own series, the rest ``other``.

A tenant label comes from the client (a header or the OpenAI ``user`` field),
so its values are unbounded; a metric label must not be. :class:`TenantLabels`
keeps the cumulative energy of at most ``tracked`` tenants (Space-Saving: a
new tenant in a full table takes the smallest one's place and count, so a heavy
tenant is never missed) and hands out at most ``top_n`` named labels: a tenant
gets its own once it is among the ``top_n`` heaviest tracked, holds at least
``1 / (4 top_n)`` of the energy seen (so a flood of one-off tenants cannot
take the slots) and a slot is free.
A named tenant keeps its slot (its counters are cumulative); every other tenant
is ``other``, and a request without a tenant is ``none``. So the series per
model are at most ``top_n + 2``, whatever the clients send.
"""

from __future__ import annotations

import heapq

__all__ = ["NO_TENANT", "OTHER", "TenantLabels"]

OTHER = "other"
NO_TENANT = "none"


class TenantLabels:
    """Maps tenants to bounded labels (see the module docstring)."""

    def __init__(self, top_n: int = 10, tracked: int | None = None) -> None:
        self.top_n = top_n
        self.tracked = tracked if tracked is not None else max(8 * top_n, 64)
        self._energy_j: dict[str, float] = {}
        self._named: set[str] = set()
        self._total_j = 0.0

    def label(self, tenant: str | None, energy_j: float) -> str:
        """Count ``energy_j`` for ``tenant``; the label its series carry."""
        if not tenant:
            return NO_TENANT
        if tenant in self._named:
            return tenant
        self._count(tenant, energy_j)
        self._total_j += energy_j
        heavy = self._energy_j.get(tenant, 0.0) >= self._total_j / (4 * self.top_n)
        if heavy and len(self._named) < self.top_n and tenant in self._heaviest():
            self._named.add(tenant)
            return tenant
        return OTHER

    def _count(self, tenant: str, energy_j: float) -> None:
        table = self._energy_j
        if tenant in table or len(table) < self.tracked:
            table[tenant] = table.get(tenant, 0.0) + energy_j
            return
        smallest = min(table, key=table.__getitem__)
        table[tenant] = table.pop(smallest) + energy_j

    def _heaviest(self) -> set[str]:
        return set(heapq.nlargest(self.top_n, self._energy_j, key=self._energy_j.__getitem__))

    @property
    def named(self) -> frozenset[str]:
        """Tenants with a series of their own."""
        return frozenset(self._named)
