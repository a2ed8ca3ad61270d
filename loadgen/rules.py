"""The study's rules for a run to count: the window rule and the 85 % running-batch rule.

**Window rule** (:data:`WINDOW_RULE`, printed in every report): the window opens when
``B`` requests have their first token and closes when ``N - B - 1`` requests have
finished. Both edges are *request events* seen by the client, not samples of the
server's running gauge. When a request finishes, the next queued one takes its slot
only after its queueing and prefill, so the running count dips below ``B`` for an
instant at every replacement; read literally ("close at the first sample below B")
such a dip would end the window early. Here a dip never closes the window; it counts,
time-weighted, in the mean running batch, which is what the 85 % rule checks.

**Running batch**: a request counts from its first token to its last (client view), so
queueing and prefill are not counted: a slight underestimate of vLLM's
``num_requests_running`` (which counts prefill), i.e. the rule errs on the strict side.

**85 % rule**: the study drops a run whose mean running batch in the window is below
85 % of ``B``. Such a run is reported as *not comparable*, with the reason, and its
window figure is never shown as the study's figure (``j_per_unit_study`` stays empty;
``j_per_unit_window`` keeps what the window measured). A run with no steady-state
window (too few requests for ``B``, or a window shorter than ``--min-window-s``, below
which the whole phase is measured instead) is not comparable either, nor is a window
shorter than the study's minimum of 20 s (:data:`STUDY_MIN_WINDOW_S`). Diffusion phases
follow the study's timed batches instead (:mod:`loadgen.batches`); they are comparable
when at least one batch was measured.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from loadgen.records import Result

__all__ = ["MIN_BATCH_FRACTION", "STUDY_MIN_WINDOW_S", "WINDOW_RULE", "comparability", "running_profile"]

MIN_BATCH_FRACTION = 0.85
STUDY_MIN_WINDOW_S = 20.0  # the study: windows of at least 20-30 s
WINDOW_RULE = (
    "window opens at the B-th first token and closes at the (N-B-1)-th finish (request events, "
    "not gauge samples); dips of the running count below B while a finished request is replaced "
    "never close it and count, time-weighted, in the mean running batch; a request runs from its "
    "first token to its finish; a run whose window is < 20 s or whose mean running batch is < 85 % of B "
    "is not comparable"
)


def running_profile(results: Sequence[Result], open_s: float, close_s: float, cap: int) -> dict[str, Any]:
    """Running count inside the window: time-weighted mean, share of time below ``cap``, dips.

    A *dip* is a stretch during which fewer than ``cap`` requests were running.
    """
    duration = close_s - open_s
    if duration <= 0:
        return {"mean_batch": 0.0, "below_cap_fraction": None, "dips": 0, "longest_dip_s": None}
    events: list[tuple[float, int]] = []
    for r in results:
        if not r.ok or r.first_token_s is None or r.finished_s is None:
            continue
        a, b = max(r.first_token_s, open_s), min(r.finished_s, close_s)
        if b > a:
            events += [(a, 1), (b, -1)]
    events.sort(key=lambda e: (e[0], e[1]))  # at equal times a finish comes before a start
    t, count, busy, below, dips, longest, dip_start = open_s, 0, 0.0, 0.0, 0, 0.0, None
    for at, delta in [*events, (close_s, 0)]:
        span = at - t
        busy += count * span
        if count < cap:
            below += span
        t, count = at, count + delta
        if count < cap and dip_start is None:
            dip_start = at
        elif count >= cap and dip_start is not None:
            dips += 1 if at > dip_start else 0
            longest = max(longest, at - dip_start)
            dip_start = None
    if dip_start is not None and close_s > dip_start:
        dips, longest = dips + 1, max(longest, close_s - dip_start)
    return {
        "mean_batch": busy / duration,
        "below_cap_fraction": float(np.clip(below / duration, 0.0, 1.0)),
        "dips": dips,
        "longest_dip_s": longest,
    }


def comparability(phase: dict[str, Any]) -> tuple[bool, str]:
    """``(comparable, reason)`` for an analysed phase (see the module docstring)."""
    if phase.get("unit") != "token":
        measured = phase.get("batches_measured") or 0
        if measured:
            return True, f"{measured} timed batch(es) measured"
        return False, "no timed batch measured (no batch times from the server, or no /v1/energy)"
    window = phase.get("window") or {}
    if window.get("kind") != "steady-state":
        return False, f"no steady-state window: {window.get('reason') or 'none'}"
    duration = float(window.get("duration_s") or 0.0)
    if duration < STUDY_MIN_WINDOW_S:
        lasted = f"the steady-state window lasted {duration:.3g} s"
        return False, f"{lasted} < {STUDY_MIN_WINDOW_S:g} s (the study's minimum)"
    cap, mean = int(phase["batch_cap"]), float(phase.get("mean_batch") or 0.0)
    need = MIN_BATCH_FRACTION * cap
    if mean < need:
        return False, (
            f"mean running batch {mean:.3g} < 85 % of B={cap} ({need:.3g}): the study drops such runs"
        )
    return True, f"mean running batch {mean:.3g} >= 85 % of B={cap}"
