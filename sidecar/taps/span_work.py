"""Whole-phase work of vLLM requests from their spans: one request (:func:`phase_events`, the
reference) or a drain's at once (:func:`phase_rows`, as :class:`~sidecar.attribution.events.WorkRows`).

For request ``i`` that ended at ``end_s[i]``, prefill over
``[end - decode - prefill, end - decode]`` (``prompt`` tokens as one step, causal
attention ``p(p+1)/2`` query-key pairs) and decode over ``[end - decode, end]``
(``n = completion - 1`` tokens, one step each, reading KV lengths ``p+1 .. p+n``),
following the shared step clock: the reference cuts it into pieces now
(:meth:`StepClock.segments`), a drain's rows keep it one row that sealing cuts at
each tick by the clock as fitted then (:mod:`sidecar.attribution.step_curve`). One
drain's spans make one :class:`WorkRows`, not one object per row. Units: s, tokens.
"""

from __future__ import annotations

import numpy as np

from sidecar.attribution.events import DECODE_I, PREFILL_I, Phase, WorkEvent, WorkRows
from sidecar.taps.step_clock import StepClock

__all__ = ["phase_events", "phase_rows"]


def phase_events(
    request_id: str,
    end_s: float,
    prompt_tokens: int,
    completion_tokens: int,
    prefill_s: float,
    decode_s: float,
    clock: StepClock | None = None,
    *,
    observe: bool = True,
) -> list[WorkEvent]:
    """Whole-phase work of one request that ended at ``end_s`` (sidecar clock, s).

    Prefill: all prompt tokens as one step, causal attention ``p(p+1)/2`` query-key
    pairs. Decode: ``n = completion - 1`` tokens (the first came from prefill), one
    step each, reading KV lengths ``p+1 .. p+n``; with a ``clock`` (the engine's
    shared step rate, :mod:`.step_clock`) the tokens follow the step rate over the
    window instead of spreading evenly (``observe``: add the window to the clock first;
    false when it already has it).
    """
    prefill_s, decode_s = max(prefill_s, 0.0), max(decode_s, 0.0)
    decode_t0 = end_s - decode_s
    out = []
    if prompt_tokens > 0:
        pairs = prompt_tokens * (prompt_tokens + 1) / 2
        out.append(
            WorkEvent(request_id, decode_t0 - prefill_s, decode_t0, Phase.PREFILL, prompt_tokens, 1.0, pairs)
        )
    n = completion_tokens - 1
    if n <= 0:
        return out
    if clock is None:
        ctx = n * prompt_tokens + n * (n + 1) / 2
        out.append(WorkEvent(request_id, decode_t0, end_s, Phase.DECODE, float(n), float(n), ctx))
        return out
    if observe:
        clock.observe(decode_t0, end_s, float(n))
    done = 0.0
    for a_s, b_s, share in clock.segments(decode_t0, end_s):
        k = n * share
        ctx = k * prompt_tokens + ((done + k) * (done + k + 1) - done * (done + 1)) / 2
        out.append(WorkEvent(request_id, a_s, b_s, Phase.DECODE, k, k, ctx))
        done += k
    return out


def phase_rows(
    request_ids: tuple[str, ...],
    end_s: np.ndarray,
    prompt: np.ndarray,
    completion: np.ndarray,
    prefill_s: np.ndarray,
    decode_s: np.ndarray,
    clock: StepClock,
) -> WorkRows:
    """The prefill and decode work of these requests, one row each (the clock has already seen their
    windows): a decode follows ``clock`` (clocked: cut when its ticks are sealed,
    :mod:`sidecar.attribution.step_curve`) where its window is one the clock observes."""
    prefill_s, decode_s = np.maximum(prefill_s, 0.0), np.maximum(decode_s, 0.0)
    decode_t0 = end_s - decode_s
    pre = np.flatnonzero(prompt > 0)
    p = prompt[pre]
    dec = np.flatnonzero(completion - 1 > 0)
    n, q = completion[dec] - 1, prompt[dec]
    with np.errstate(invalid="ignore"):
        length_s = decode_s[dec]
        clocked = (length_s > 0) & (length_s <= clock.horizon_s)
    return WorkRows(
        request_ids,
        np.concatenate([pre, dec]),
        np.concatenate([np.full(pre.size, PREFILL_I), np.full(dec.size, DECODE_I)]),
        np.concatenate([decode_t0[pre] - prefill_s[pre], decode_t0[dec]]),
        np.concatenate([decode_t0[pre], end_s[dec]]),
        np.concatenate([p, n]),
        np.concatenate([np.ones(pre.size), n]),
        np.concatenate([p * (p + 1) / 2, n * q + n * (n + 1) / 2]),
        np.concatenate([np.zeros(pre.size, dtype=bool), clocked]),
        clock,
    )
