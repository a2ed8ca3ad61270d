"""Whole-phase work of vLLM requests from their spans: one request (:func:`phase_events`, the
reference) or a drain's at once (:func:`phase_rows`, as :class:`~sidecar.attribution.events.WorkRows`).

For request ``i`` that ended at ``end_s[i]``, prefill over
``[end - decode - prefill, end - decode]`` (``prompt`` tokens as one step, causal
attention ``p(p+1)/2`` query-key pairs) and decode over ``[end - decode, end]``
(``n = completion - 1`` tokens, one step each, reading KV lengths ``p+1 .. p+n``),
cut into pieces that follow the shared step clock (:meth:`StepClock.cut`). One
drain's spans make one :class:`WorkRows`, not one object per piece. Units: s, tokens.
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
    ticks_s: np.ndarray | None = None,
) -> WorkRows:
    """The prefill and decode work of these requests (the clock has already seen their windows);
    decode cut at ``ticks_s`` (the counter's edges known so far) where given (:meth:`StepClock.cut`)."""
    prefill_s, decode_s = np.maximum(prefill_s, 0.0), np.maximum(decode_s, 0.0)
    decode_t0 = end_s - decode_s
    pre = np.flatnonzero(prompt > 0)
    p = prompt[pre]
    dec = np.flatnonzero(completion - 1 > 0)
    window, a_s, b_s, share = clock.cut(decode_t0[dec], end_s[dec], ticks_s)
    member = dec[window]
    n = completion[member] - 1
    k = n * share
    before = np.cumsum(k) - k  # tokens of the earlier pieces, all windows
    start = np.flatnonzero(np.r_[True, window[1:] != window[:-1]]) if window.size else window
    done = before - np.repeat(before[start], np.diff(np.r_[start, window.size]))
    ctx = k * prompt[member] + ((done + k) * (done + k + 1) - done * (done + 1)) / 2
    return WorkRows(
        request_ids,
        np.concatenate([pre, member]),
        np.concatenate([np.full(pre.size, PREFILL_I), np.full(member.size, DECODE_I)]),
        np.concatenate([decode_t0[pre] - prefill_s[pre], a_s]),
        np.concatenate([decode_t0[pre], b_s]),
        np.concatenate([p, k]),
        np.concatenate([np.ones(pre.size), k]),
        np.concatenate([p * (p + 1) / 2, ctx]),
    )
