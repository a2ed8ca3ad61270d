"""Stopping without losing what was measured, and what a restarted sidecar sees of it.

:func:`seal_stop` runs once at SIGTERM/SIGINT, after the periodic jobs are
cancelled: the taps are drained and stopped (no new input), drained once more
(what they had queued), the meter is read once more, every tick up to the last
reading is sealed (records whose end plus one counter update is covered become
final: histograms and ledger), and every request still open is stored as
*provisional* under the ledger state key ``provisional``; only then are the taps that
send downstream (the span forwarder) closed, with what is left of the grace period. Steps
after the grace period has run out are skipped, except storing what is open, so the process
exits within ``shutdown_grace_s``.

:func:`resume_provisional` takes them up at start: each continues as a live
request with the energy it had (attribute ``resumed``), so ``/v1/requests/{id}``
answers for it; the stop's gap is lost work, so its final record is marked
``energy_unknown`` (its energy is a lower bound) and stays out of the histograms. The
stored list stays until the next stop replaces it, so a crash of the resumed sidecar loses
none of them (a request final in the ledger already is not taken up twice).
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from sidecar.taps.tap import Sends

if TYPE_CHECKING:
    from sidecar.app import Sidecar

__all__ = ["PROVISIONAL_KEY", "resume_provisional", "seal_stop"]

log = logging.getLogger(__name__)

PROVISIONAL_KEY = "provisional"
MAX_STORED = 10_000  # provisional records kept across a stop (most recent first seen)
RETRY_S = 0.25  # a stop's write that failed (the ledger locked by a backup, say) is tried again this often


def seal_stop(sidecar: Sidecar, grace_s: float) -> dict[str, int]:
    """Drain, stop, seal and store within ``grace_s`` seconds; returns what was done (counts)."""
    deadline = time.monotonic() + grace_s

    def left_s() -> float:
        return deadline - time.monotonic()

    done = {"final": 0, "provisional": 0}
    sidecar.poller.stop()
    for tap in reversed(sidecar.taps):  # safe on a tap that never (or only half) started
        _drain(sidecar, tap)
        try:
            tap.stop(max(min(1.0, left_s() / 4), 0.0))
        except Exception:  # one tap failing to stop must not keep the others open
            log.exception("tap %s failed to stop", type(tap).__name__)
    if left_s() > 0:
        sidecar.poller.read_once()  # the last reading: seal up to it
        try:
            done["final"] = sidecar.tick(seal_until_s=math.inf)  # drains the taps once more
        except Exception:
            log.exception("the final seal failed; open requests are stored as provisional")
    else:
        log.warning("shutdown grace period (%.1f s) ran out before the final seal", grace_s)
    done["provisional"] = _store_open(sidecar, left_s)
    # records a failed write kept back in memory (the seal's tick wrote them if it could), the floor
    ledger = sidecar.ledger
    _retried(
        "write the final records kept in memory",
        lambda: ledger.flush(force=True),
        left_s,
        lambda: not ledger.waiting,
    )
    keeper = sidecar.floor_keeper
    save = lambda: keeper.save(sidecar.clock(), force=True)  # noqa: E731
    _retried("store the idle floor", save, left_s, lambda: not keeper.failed)
    for tap in sidecar.taps:  # downstream last: what is stored cannot wait on a slow collector
        if isinstance(tap, Sends):
            try:
                tap.close_output(max(left_s(), 0.0))
            except Exception:
                log.exception("tap %s failed to close its output", type(tap).__name__)
    log.info(
        "stopped: %d final records sealed, %d open requests stored as provisional (%.2f s of %.1f s)",
        done["final"],
        done["provisional"],
        grace_s - left_s(),
        grace_s,
    )
    return done


def _drain(sidecar: Sidecar, tap: Any) -> None:
    """Take what a tap holds before it stops (a UDP socket's buffer is lost when it closes)."""
    try:
        events, infos = tap.due(sidecar.clock())
    except Exception:
        log.exception("draining tap %s failed", type(tap).__name__)
        return
    for event in events:
        sidecar.attributor.add_work(event)
    for info in infos:
        sidecar.attributor.add_request(info)


def _retried(
    what: str,
    write: Callable[[], object],
    left_s: Callable[[], float],
    done: Callable[[], bool] = lambda: True,
) -> bool:
    """Run ``write`` until it raises nothing and ``done`` says so (a write that keeps what it could
    not store), again every :data:`RETRY_S` while the grace period lasts (another connection holding
    the ledger, a backup, or a full disk may let go); a failure is logged, never raised (one part
    that cannot be stored must not cost the stop the others)."""
    while True:
        try:
            write()
            if done():
                return True
            failure = None
        except Exception as err:  # sqlite3's locked, busy, full; a bug: logged below all the same
            failure = err
        if left_s() <= RETRY_S:
            if failure is None:
                log.error("could not %s within the grace period", what)
            else:
                log.error("could not %s within the grace period", what, exc_info=failure)
            return False
        time.sleep(RETRY_S)


def _store_open(sidecar: Sidecar, left_s: Callable[[], float]) -> int:
    """Store the open requests, at most :data:`MAX_STORED`: those with measured energy first (a
    flood of requests that never worked must not push out one that did), then the latest seen."""
    records = list(sidecar.attributor.provisional())
    if len(records) > MAX_STORED:
        order = sorted(range(len(records)), key=lambda i: (records[i].energy_j > 0, i))
        keep = sorted(order[-MAX_STORED:])
        log.warning(
            "%d open requests not stored (more than %d; those without energy and the oldest left out)",
            len(records) - MAX_STORED,
            MAX_STORED,
        )
        records = [records[i] for i in keep]
    state = {"records": [r.to_json() for r in records], "stored_unix_s": time.time()}
    stored = [False]  # the file took it (a locked or full one says False, counted, and is tried again)

    def store() -> None:
        stored[0] = sidecar.ledger.save_state(PROVISIONAL_KEY, state)

    saved = _retried(f"store {len(records)} provisional records", store, left_s, lambda: stored[0])
    return len(records) if saved else 0


def resume_provisional(sidecar: Sidecar) -> int:
    """Take up the requests a stopped sidecar stored as provisional; returns how many.

    The stored list is kept until the next stop stores what is open then: a sidecar killed before
    the resumed requests are final (kill -9, OOM) leaves them to the next start. A request whose
    final record is in the ledger already is not taken up again, and a list older than the
    ledger's retention (its records could be gone) is dropped, so none is resumed twice."""
    try:
        state = sidecar.ledger.load_state(PROVISIONAL_KEY)
    except Exception:
        log.exception("could not load provisional records")
        return 0
    saved = (state or {}).get("records", [])
    if not isinstance(saved, list) or not saved:
        return 0
    stored = state.get("stored_unix_s") if isinstance(state, dict) else None
    if isinstance(stored, int | float) and time.time() - stored > sidecar.ledger.max_age_s:
        log.warning("dropped %d provisional records stored longer ago than the ledger keeps any", len(saved))
        sidecar.ledger.save_state(PROVISIONAL_KEY, {"records": []})
        return 0
    now_s = sidecar.clock()
    resumed = sum(
        sidecar.attributor.resume(rec, now_s)
        for rec in saved[:MAX_STORED]
        if isinstance(rec, dict) and not _stored_final(sidecar, rec.get("request_id"))
    )
    log.info("resumed %d of %d requests a stopped sidecar left open", resumed, len(saved))
    return resumed


def _stored_final(sidecar: Sidecar, request_id: object) -> bool:
    """Whether the ledger has a final record for this id (resumed and finished before a crash)."""
    return isinstance(request_id, str) and sidecar.ledger.get(request_id) is not None
