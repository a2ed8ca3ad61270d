"""What the taps hand to attribution: work events and request info.

A work event says that request ``request_id`` kept the accelerator busy from
``t0_s`` to ``t1_s`` (sidecar monotonic seconds) doing ``units`` of work in one
phase. ``units`` are tokens for prefill/decode and pixels x frames x steps for
denoise. ``steps`` is how many engine iterations the event covers (1 for a
per-iteration event from the vLLM plugin; many for a whole-phase event built
from a span). ``context_tokens`` is the attention work: query-key pairs, i.e.
for each token processed, the KV length it attended over, summed (a decode
step at KV length L adds L; a prefill chunk of k tokens ending at KV length L
adds k*(L - (k-1)/2) under causal attention); 0 where unknown.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from enum import IntEnum
from typing import Any

import numpy as np

from sidecar.attribution.step_curve import StepCurve
from sidecar.contracts.span_attributes import REQUEST_STATUS
from sidecar.errors import WorkEventError

__all__ = [
    "DECODE_I",
    "DENOISE_I",
    "PREFILL_I",
    "PROMPT_ESTIMATED",
    "WORK_LOST",
    "Phase",
    "RequestInfo",
    "StepBatch",
    "Work",
    "WorkEvent",
    "WorkRows",
]

# An info attribute a tap sets ("true") when some of the request's work may be lost before it
# reached the sidecar (a gap in a datagram stream while the request was in flight): its final
# record is ``energy_unknown`` (reason ``work_lost``), not a measured 0 J or a share that is too low.
WORK_LOST = "work_lost"
PROMPT_ESTIMATED = "prompt_tokens_estimated"  # the prompt count is an estimate (the proxy's, from text)


class Phase(IntEnum):
    """What a request was doing; ``IDLE`` is for energy no request caused."""

    PREFILL = 0
    DECODE = 1
    DENOISE = 2
    IDLE = 3

    @property
    def label(self) -> str:
        """The ``jouletrace.phase`` attribute value."""
        return self.name.lower()


# The phases as plain ints, for NumPy: an array (or a NumPy scalar) compared with an IntEnum member
# takes ~10 us more than with an int (NumPy works out the member's type on every call); a step's
# check compared four times, twice a step (its work and its CPU gap): ~8 % of the hook path's CPU.
PREFILL_I, DECODE_I, DENOISE_I = int(Phase.PREFILL), int(Phase.DECODE), int(Phase.DENOISE)


@dataclass(frozen=True, slots=True)
class WorkEvent:
    """One stretch of one request's work. Validate with :meth:`check`."""

    request_id: str
    t0_s: float
    t1_s: float
    phase: Phase
    units: float
    steps: float = 1.0
    context_tokens: float = 0.0

    def check(self) -> None:
        """Raise :class:`WorkEventError` if the event is impossible."""
        for name in ("t0_s", "t1_s", "units", "steps", "context_tokens"):
            value = getattr(self, name)
            if not math.isfinite(value):
                raise WorkEventError(f"work event {self.request_id!r}: {name}={value} is not finite")
        if self.t1_s < self.t0_s:
            raise WorkEventError(
                f"work event {self.request_id!r}: ends before it starts "
                f"(t0_s={self.t0_s:.6f}, t1_s={self.t1_s:.6f})"
            )
        for name in ("units", "steps", "context_tokens"):
            if getattr(self, name) < 0:
                raise WorkEventError(f"work event {self.request_id!r}: {name} is negative")
        if self.phase is Phase.IDLE:
            raise WorkEventError(f"work event {self.request_id!r}: phase idle is not work")
        if not self.request_id:
            raise WorkEventError("work event without a request id")


@dataclass(frozen=True, slots=True)
class StepBatch:
    """One engine step's work for all its members at once, as parallel arrays.

    The exact membership a scheduler hook sees: the step ran from ``t0_s`` to
    ``t1_s`` (sidecar monotonic seconds); member ``i`` is ``request_ids[i]``,
    worked in ``phase[i]`` (a :class:`Phase` value), processed ``units[i]``
    tokens and ``context_tokens[i]`` query-key pairs. Each member takes part
    in ``steps`` engine steps (1 for a step; 0 for the CPU gap after a step,
    in which its members are present but no step runs). Ingested as one array
    append, not one Python object per member. Validate with :meth:`check`.
    """

    t0_s: float
    t1_s: float
    request_ids: tuple[str, ...]
    phase: np.ndarray  # int, Phase values (PREFILL or DECODE)
    units: np.ndarray  # tokens
    context_tokens: np.ndarray  # query-key pairs
    steps: float = 1.0  # engine steps each member takes part in (0: a CPU gap the members are present in)
    timed: bool = False  # [t0_s, t1_s] is the step as the engine ran it (the scheduler hook), not inferred

    def check(self) -> None:
        """Raise :class:`WorkEventError` if the step is impossible."""
        n = len(self.request_ids)
        if not (math.isfinite(self.t0_s) and math.isfinite(self.t1_s)) or self.t1_s < self.t0_s:
            raise WorkEventError(f"step batch: bad times t0_s={self.t0_s}, t1_s={self.t1_s}")
        if not (math.isfinite(self.steps) and self.steps >= 0):
            raise WorkEventError(f"step batch: steps={self.steps} must be finite and >= 0")
        for name in ("phase", "units", "context_tokens"):
            arr = getattr(self, name)
            if arr.shape != (n,):
                raise WorkEventError(f"step batch: {name} has shape {arr.shape}, expected ({n},)")
        if not n:
            return
        # four reductions instead of one pass per condition (a step has hundreds of members):
        # a NaN makes the minimum NaN, an infinity makes the sum infinite
        low = min(float(self.units.min()), float(self.context_tokens.min()))
        if not (low >= 0 and math.isfinite(float(self.units.sum()) + float(self.context_tokens.sum()))):
            raise WorkEventError("step batch: units or context_tokens negative or not finite")
        if not (int(self.phase.min()) >= PREFILL_I and int(self.phase.max()) <= DENOISE_I):
            raise WorkEventError("step batch: phase must be prefill, decode or denoise")
        if not all(self.request_ids):
            raise WorkEventError("step batch: member without a request id")


@dataclass(frozen=True, slots=True)
class WorkRows:
    """Many work events at once, as parallel arrays (the span handler's work of one drain).

    Row ``i`` is the :class:`WorkEvent` of request ``request_ids[member[i]]`` from
    ``t0_s[i]`` to ``t1_s[i]`` in ``phase[i]``, with ``units``, ``steps`` and
    ``context_tokens`` as there; where ``clocked``, its steps follow ``curve`` (one engine's
    step rate) rather than spread evenly over the interval. Each row is checked as a work event is
    (:meth:`invalid`); a bad row costs only itself.
    """

    request_ids: tuple[str, ...]
    member: np.ndarray  # int, index into request_ids
    phase: np.ndarray  # int, Phase values
    t0_s: np.ndarray
    t1_s: np.ndarray
    units: np.ndarray
    steps: np.ndarray
    context_tokens: np.ndarray
    # rows whose steps follow ``curve`` (a decode from a span, cut when sealed: attribution/step_curve.py)
    clocked: np.ndarray | None = None
    curve: StepCurve | None = None

    def __len__(self) -> int:
        return int(self.member.size)

    def invalid(self) -> np.ndarray:
        """A mask of the rows :meth:`WorkEvent.check` would refuse (and of rows with a bad member)."""
        n = len(self)
        if any(
            getattr(self, k).shape != (n,)
            for k in ("phase", "t0_s", "t1_s", "units", "steps", "context_tokens")
        ) or (self.clocked is not None and self.clocked.shape != (n,)):
            return np.ones(n, dtype=bool)
        with np.errstate(invalid="ignore"):
            bad = ~(np.isfinite(self.t0_s) & np.isfinite(self.t1_s) & (self.t1_s >= self.t0_s))
            for arr in (self.units, self.steps, self.context_tokens):
                bad |= ~(np.isfinite(arr) & (arr >= 0))
        bad |= (self.phase < PREFILL_I) | (self.phase > DENOISE_I)
        bad |= (self.member < 0) | (self.member >= len(self.request_ids))
        empty = [i for i, rid in enumerate(self.request_ids) if not rid]
        if empty:
            bad |= np.isin(self.member, empty)
        out: np.ndarray = bad
        return out


Work = WorkEvent | StepBatch | WorkRows  # what a tap hands to Attributor.add_work


@dataclass(slots=True)
class RequestInfo:
    """What is known about a request besides its work (from spans, plugin, proxy).

    ``end_s`` set means the request has finished: no more work will come for
    it, and its record becomes final once the energy timeline covers ``end_s``
    plus one counter update.
    """

    request_id: str
    model: str = "unknown"
    # gen_ai.operation.name: chat, text_completion, image_generation, video_generation
    operation: str = "chat"
    task: str = "unknown"  # jouletrace.task (from the client's span or the loadgen)
    start_s: float | None = None
    end_s: float | None = None
    prompt_tokens: int = 0
    output_tokens: int = 0
    output_units: float = 0.0  # images or videos for diffusion requests
    unit: str = "token"  # token, image, video
    attributes: Mapping[str, str] = field(default_factory=dict)  # read only: a later info replaces it
    # the token counts and end come from a source that sees every engine step (vLLM's scheduler
    # hook): exact, and the request's whole (a parallel-sampling request's children summed)
    exact: bool = False

    def over(self, older: RequestInfo) -> RequestInfo:
        """This info on top of an ``older`` one for the same request: what this one leaves
        unknown (task, model, start, end, attributes it does not name) is kept from ``older``.

        Sources know different things: vLLM's scheduler hook or plugin says when a request
        finished but not its task, the span joined with the client's span says the task; in
        whatever order they come, the later must not erase what the earlier knew (a task lost
        that way is never named again: its client span was already joined). An ``exact`` info's
        token counts, end (none yet: still running) and attributes stand over one that is not
        exact, whichever came first: the plugin and the span see one child of a parallel-sampling
        request (vLLM names each by the request's id), the scheduler hook sees them all. Two
        things stand by their own rule: the request's status (``jouletrace.request.status``, a
        tap's word on how it ended) is the latest said, and a counted prompt stands over one
        estimated from text (:func:`_counted_prompt`)."""
        if self.exact != older.exact:
            exact, other = (self, older) if self.exact else (older, self)
            merged = replace(self, exact=False).over(replace(older, exact=False))  # task, model, start
            attributes = {**other.attributes, **exact.attributes}
            # an outcome is the latest said: the exact info may hold the proxy's first sight, "ok"
            if REQUEST_STATUS in self.attributes:
                attributes[REQUEST_STATUS] = self.attributes[REQUEST_STATUS]
            attributes.pop(PROMPT_ESTIMATED, None)  # the exact count stands
            return replace(
                merged,
                prompt_tokens=exact.prompt_tokens,
                output_tokens=exact.output_tokens,
                end_s=exact.end_s,
                attributes=attributes,
                exact=True,
            )
        kept = _counted_prompt(self, older)
        if self.task == "unknown" and older.task != "unknown":
            kept["task"] = older.task
        if self.model == "unknown" and older.model != "unknown":
            kept["model"] = older.model
        if self.start_s is None and older.start_s is not None:
            kept["start_s"] = older.start_s
        if self.end_s is None and older.end_s is not None:  # a finished request does not resume
            kept["end_s"] = older.end_s
        if (
            "attributes" not in kept
            and older.attributes
            and not older.attributes.keys() <= self.attributes.keys()
        ):
            kept["attributes"] = {**older.attributes, **self.attributes}
        return replace(self, **kept) if kept else self


def _counted_prompt(newer: RequestInfo, older: RequestInfo) -> dict[str, Any]:
    """A counted prompt stands over an estimated one (``prompt_tokens_estimated``: the proxy's, from
    the prompt's text), whichever came first, and any count over none (0: no request has an empty
    prompt; the proxy's first sight of a stream knows none yet): the fields to keep in ``newer``
    over ``older``. Probe 11: an aborted request's hook info (its output count an estimate, so not
    ``exact``) had its engine-counted 39 prompt tokens replaced by the proxy's later estimate of 32;
    then a client gone mid-stream: the proxy's first sight (no count) came after the hook's 61,
    and its later estimate of 30 stood over that 0."""
    new_estimated, old_estimated = PROMPT_ESTIMATED in newer.attributes, PROMPT_ESTIMATED in older.attributes
    merged = {**older.attributes, **newer.attributes}
    if not newer.prompt_tokens and older.prompt_tokens:  # nothing said: the older count, as it was said
        if not old_estimated:
            merged.pop(PROMPT_ESTIMATED, None)
        return {"prompt_tokens": older.prompt_tokens, "attributes": merged}
    if new_estimated and not old_estimated and older.prompt_tokens:
        del merged[PROMPT_ESTIMATED]
        return {"prompt_tokens": older.prompt_tokens, "attributes": merged}
    if old_estimated and not new_estimated and newer.prompt_tokens:
        del merged[PROMPT_ESTIMATED]
        return {"attributes": merged}
    return {}
