"""A sealed tick's rows into their requests' sums: the request table's way against the way before.

Sealing a tick adds each of its work rows' energy to its request's sums in the request table
(:meth:`sidecar.attribution.requests.RequestTable.add_energy`, after
:func:`sidecar.attribution.groups.group_rows`) and each model's phase totals
(:meth:`sidecar.attribution.sealing.TickSealer._add_model_energy`'s look-up of the rows' models).
``ingest_grpc.py``'s flood seals ticks of ~8,900 rows from ~8,200 requests (a span's decode is cut
at every counter edge: a request has a row or two in each tick it spans) with ~20,000 live
requests; those are the defaults here. Ticks of random rows of that shape go through:

* **before** (the code of 2026-12-04's first stop, here as it was): the rows' stable sort by
  64-bit code, a dict look-up a request for its row, ``np.add.reduceat`` of the sorted component
  and regressor matrices, ``+=`` through a fancy index, the models as a list checked for ``None``
  and made a dict;
* **now**: the table's own ``group_rows`` and ``add_energy`` (codes as 16-bit offsets sorted by
  radix, :class:`~sidecar.attribution.live_codes.LiveCodes` looked up at once, sums as one weighted
  count, ``take`` then put) and ``one_model``.

Then the finalize pass's check times, a tick's worth (``--checks``, ~1,250 at the flood's 12,500
requests a second and 10 ticks a second) put for new requests and as many taken out once due,
with ``--live`` entries waiting: **before**, a heap of (time, code) tuples (a push and a pop each,
a dict look-up whether live); **now**, :class:`~sidecar.attribution.due_checks.DueChecks`
(appends, then one sort, merge and prefix a tick).

Both run on the same ticks, alternately, on two tables built alike; the sums they leave are
compared (equal to 1e-12 relative: the weighted count adds in row order, ``reduceat`` in its
own). Each figure is CPU time (``time.thread_time``) per tick, the least of ``--repeat`` rounds.

Ends with one line ``seal rows us per tick N (before M)``: the rows' figures.

    .venv/bin/python benchmarks/seal_rows.py [--rows 8900] [--groups 8200] [--live 20000]
"""

from __future__ import annotations

import argparse
import heapq
import sys
import time
from collections.abc import Callable
from functools import partial
from itertools import repeat
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sidecar.attribution.due_checks import DueChecks
from sidecar.attribution.events import RequestInfo
from sidecar.attribution.groups import Groups, group_rows
from sidecar.attribution.live_codes import LiveCodes
from sidecar.attribution.requests import RequestTable
from sidecar.attribution.rules import Split

Tick = tuple[np.ndarray, np.ndarray, Split, np.ndarray, np.ndarray, np.ndarray]


def groups_before(req: np.ndarray) -> Groups:
    """:func:`group_rows` as it was: a stable sort of the 64-bit codes."""
    return group_rows(req, sort=lambda codes: np.argsort(codes, kind="stable"))


def slot_map(table: RequestTable) -> dict[int, int]:
    """The table's code -> row map as it was kept then (a dict beside the ids; made here once)."""
    return {code: table._live.slot_of(code) for code in table._codes.values()}


def add_before(table: RequestTable, tick: Tick, default: str, slots_by_code: dict[int, int]) -> None:
    """``add_energy`` and the models' look-up as they were (the sums the table keeps, its own rows;
    ``slots_by_code``: the code -> row dict the table kept then, :func:`slot_map`)."""
    req, phase, split, share, t0, t1 = tick
    assert split.component_j is not None and split.work is not None and split.unexplained_j is not None
    g = groups_before(req)
    n = g.codes.size
    phase_j = np.bincount(g.inverse * 3 + phase, weights=split.row_j, minlength=3 * n).reshape(n, 3)
    busy = np.bincount(g.inverse, weights=share, minlength=n)
    first = np.minimum.reduceat(t0[g.order], g.starts)
    last = np.maximum.reduceat(t1[g.order], g.starts)
    comp = np.add.reduceat(split.component_j[g.order], g.starts, axis=0)
    work = np.add.reduceat(split.work[g.order], g.starts, axis=0)
    unexplained = np.bincount(g.inverse, weights=split.unexplained_j, minlength=n)
    slots = np.fromiter(map(slots_by_code.get, g.codes.tolist(), repeat(-1, n)), np.int64, n)
    sums = table._sums
    sums.phase_j[slots] += phase_j
    sums.busy_s[slots] += busy
    sums.first_t[slots] = np.minimum(sums.first_t[slots], first)
    sums.last_t[slots] = np.maximum(sums.last_t[slots], last)
    sums.component_j[slots] += comp
    sums.work[slots] += work
    sums.unexplained_j[slots] += unexplained
    sums.has_components[slots] = True
    models = table.models_at(slots, default)
    if len(dict.fromkeys(models)) == 1:
        phase_j.sum(axis=0)


def add_now(table: RequestTable, tick: Tick, default: str) -> None:
    """The table's ``add_energy`` and ``one_model``, as sealing calls them."""
    req, phase, split, share, t0, t1 = tick
    g = group_rows(req)
    slots = table.add_energy(req, phase, split, share, t0, t1, g)
    if table.one_model(slots) is None:
        table.models_at(slots, default)
    np.bincount(phase, weights=split.row_j, minlength=3)


def ticks_of(n_ticks: int, rows: int, groups: int, live: int, seed: int) -> list[Tick]:
    """Random ticks: ``groups`` of the live codes, ``rows - groups`` of them with a second row."""
    rng = np.random.default_rng(seed)
    out: list[Tick] = []
    for _ in range(n_ticks):
        codes = rng.choice(live, groups, replace=False)
        req = np.concatenate([codes, codes[: rows - groups]]).astype(np.int64)
        split = Split(rng.random(rows), 0.0, rng.random((rows, 6)), rng.random((rows, 6)), rng.random(rows))
        t0 = rng.random(rows)
        out.append((req, rng.integers(0, 2, rows), split, rng.random(rows), t0, t0 + rng.random(rows)))
    return out


def table_of(live: int) -> RequestTable:
    table = RequestTable()
    table.add_new([RequestInfo(f"chatcmpl-{i:032x}", model="m", end_s=1e9) for i in range(live)])
    return table


def timed(way: Callable[[RequestTable, Tick, str], None], table: RequestTable, ticks: list[Tick]) -> float:
    t0 = time.thread_time()
    for tick in ticks:
        way(table, tick, "m")
    return (time.thread_time() - t0) / len(ticks)


def checks_before(live: int, per_tick: int, ticks: int) -> float:
    """CPU s a tick of the heap of check times: ``per_tick`` pushes and pops with ``live`` waiting."""
    heap = [(float(k), k) for k in range(live)]  # one entry a live request, ends a second apart
    heapq.heapify(heap)
    alive = dict.fromkeys(range(live + per_tick * ticks))
    code, t0 = live, time.thread_time()
    for tick in range(ticks):
        for _ in range(per_tick):
            heapq.heappush(heap, (live + float(code), code))
            code += 1
        found = set()
        while heap and heap[0][0] <= (tick + 1) * per_tick:
            c = heapq.heappop(heap)[1]
            if c in alive:
                found.add(c)
        sorted(found)
    return (time.thread_time() - t0) / ticks


def checks_now(live: int, per_tick: int, ticks: int) -> float:
    """The same puts and look-ups through :class:`DueChecks` (liveness as the table asks it)."""
    checks = DueChecks()
    for k in range(live):
        checks.put(k, float(k))
    codes = LiveCodes()
    codes.add_run(0, list(range(live + per_tick * ticks)))
    code, t0 = live, time.thread_time()
    for tick in range(ticks):
        for _ in range(per_tick):
            checks.put(code, live + float(code))
            code += 1
        checks.due(float((tick + 1) * per_tick), lambda c: codes.slots_of(c) >= 0)
    return (time.thread_time() - t0) / ticks


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rows", type=int, default=8900, help="work rows a tick")
    ap.add_argument("--groups", type=int, default=8200, help="requests a tick (<= rows)")
    ap.add_argument("--live", type=int, default=20_000, help="requests in flight")
    ap.add_argument("--checks", type=int, default=1250, help="check times put and taken out a tick")
    ap.add_argument("--ticks", type=int, default=20, help="ticks a round")
    ap.add_argument("--repeat", type=int, default=5, help="rounds (the least kept)")
    args = ap.parse_args()
    if not 0 < args.groups <= args.rows or args.groups > args.live:
        ap.error("need 0 < groups <= rows and groups <= live")
    ticks = ticks_of(args.ticks, args.rows, args.groups, args.live, seed=1)
    before, now = table_of(args.live), table_of(args.live)
    before_way = partial(add_before, slots_by_code=slot_map(before))
    spent = {"before": [], "now": []}
    for _ in range(args.repeat):
        spent["before"].append(timed(before_way, before, ticks))
        spent["now"].append(timed(add_now, now, ticks))
    for name in before._sums._FIELDS:
        a, b = getattr(before._sums, name), getattr(now._sums, name)
        if not np.allclose(a, b, rtol=1e-12, atol=0.0):
            raise SystemExit(f"the two ways left different sums in {name}")
    us = {k: min(v) * 1e6 for k, v in spent.items()}
    print(
        f"{args.ticks} ticks of {args.rows} rows from {args.groups} requests, {args.live} live, "
        f"least of {args.repeat} rounds; CPU us per tick (the sums left by both agree):"
    )
    for k, v in us.items():
        print(f"  {k:8s} {v:9.0f}  ({v * 1e3 / args.rows:.0f} ns a row)")
    checks = {
        "before": min(checks_before(args.live, args.checks, 50) for _ in range(args.repeat)) * 1e6,
        "now": min(checks_now(args.live, args.checks, 50) for _ in range(args.repeat)) * 1e6,
    }
    print(f"check times, {args.checks} put and taken out a tick with {args.live} waiting; CPU us per tick:")
    for k, v in checks.items():
        print(f"  {k:8s} {v:9.0f}  ({v * 1e3 / args.checks:.0f} ns a request)")
    print(f"seal rows us per tick {us['now']:.0f} (before {us['before']:.0f})")


if __name__ == "__main__":
    main()
