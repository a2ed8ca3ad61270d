"""Continuous batching with chunked prefill, as vLLM v1 schedules it.

Each engine step (iteration) the scheduler builds one batch under two limits:
at most ``max_num_seqs`` requests running (admitted, holding KV cache) and at
most ``max_num_batched_tokens`` tokens processed in the step. The order:

1. every running request that is decoding gets 1 token (its next output);
2. the remaining token budget goes to prefill chunks, first-come first-served:
   running requests whose prompt is only partly computed continue, then
   waiting requests are admitted while fewer than ``max_num_seqs`` run.
   A prompt longer than the budget left is cut into chunks over several steps
   (chunked prefill).

The last prefill chunk of a request also produces its first output token, so
a request with ``output_tokens = N`` needs ``N - 1`` decode steps after its
prefill; it finishes at the end of the step that produces token ``N``.

Time: a step starts at ``t0_s`` and lasts what the GPU model says
(``execute(members) -> seconds``); the next step starts after a CPU gap
(``gap() -> seconds``). Requests that arrive while a step runs are admitted at
the next step. With nothing to run the engine idles until the next arrival.
No KV-cache capacity limit and no preemption are modelled.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import NamedTuple

from sidecar.attribution.events import Phase
from sidecar.errors import ConfigError
from sidecar.sim.workload import SimRequest

__all__ = ["Member", "ScheduleResult", "SchedulerConfig", "Step", "schedule"]


class Member(NamedTuple):
    """One request's part in one step.

    ``tokens``: tokens it processes in the step (a prefill chunk, or 1 for
    decode). ``context_tokens``: the KV length it attends over in the step,
    including the tokens it processes (prompt computed so far + this chunk for
    prefill; prompt + outputs so far for decode).
    """

    request_id: str
    phase: Phase
    tokens: int
    context_tokens: int


@dataclass(frozen=True, slots=True)
class Step:
    """One engine iteration from ``t0_s`` to ``t1_s`` (simulated seconds)."""

    t0_s: float
    t1_s: float
    members: tuple[Member, ...]

    @property
    def duration_s(self) -> float:
        return self.t1_s - self.t0_s


@dataclass(frozen=True, slots=True)
class SchedulerConfig:
    """vLLM's two batch limits (same names and defaults as vLLM's flags)."""

    max_num_seqs: int = 32
    max_num_batched_tokens: int = 512

    def check(self) -> None:
        """Raise :class:`ConfigError` naming the knob that is invalid."""
        if self.max_num_seqs < 1:
            raise ConfigError(f"scheduler.max_num_seqs must be >= 1, got {self.max_num_seqs}")
        if self.max_num_batched_tokens < 1:
            raise ConfigError(
                f"scheduler.max_num_batched_tokens must be >= 1, got {self.max_num_batched_tokens}"
            )


@dataclass(frozen=True, slots=True)
class ScheduleResult:
    """The steps run, and each request's first-token and finish times (s)."""

    steps: list[Step]
    first_token_s: dict[str, float]
    finish_s: dict[str, float]


class _Running:
    """Mutable per-request progress while admitted."""

    __slots__ = ("computed", "generated", "output", "prompt", "request_id")

    def __init__(self, request: SimRequest) -> None:
        self.request_id = request.request_id
        self.prompt = request.prompt_tokens
        self.output = request.output_tokens
        self.computed = 0  # prompt tokens whose KV is computed
        self.generated = 0  # output tokens produced


def _compose(
    running: list[_Running], waiting: deque[SimRequest], max_seqs: int, max_tokens: int
) -> tuple[list[Member], list[_Running], list[tuple[_Running, int]]]:
    """One step's batch under the token budget: (members, the decodes, the prefill chunks).

    Every decode gets one token, then partial prefills continue (FCFS), then waiting
    requests are admitted (moved into ``running``) while there is budget and a free seat.
    """
    members: list[Member] = []
    decoding: list[_Running] = []
    budget = max_tokens
    for r in running:  # 1. every decode gets one token
        if budget == 0:
            break
        if r.computed == r.prompt:
            members.append(Member(r.request_id, Phase.DECODE, 1, r.prompt + r.generated))
            decoding.append(r)
            budget -= 1
    chunked: list[tuple[_Running, int]] = []
    for r in running:  # 2a. partial prefills continue, FCFS
        if budget == 0:
            break
        if r.computed < r.prompt:
            chunk = min(r.prompt - r.computed, budget)
            chunked.append((r, chunk))
            budget -= chunk
    while waiting and budget > 0 and len(running) < max_seqs:  # 2b. admissions
        r = _Running(waiting.popleft())
        running.append(r)
        chunk = min(r.prompt, budget)
        chunked.append((r, chunk))
        budget -= chunk
    for r, chunk in chunked:
        members.append(Member(r.request_id, Phase.PREFILL, chunk, r.computed + chunk))
    return members, decoding, chunked


def _advance(
    running: list[_Running],
    decoding: list[_Running],
    chunked: list[tuple[_Running, int]],
    t1: float,
    first_token_s: dict[str, float],
    finish_s: dict[str, float],
) -> list[_Running]:
    """Book a step that ended at ``t1``: tokens generated, prompts computed; the requests still running."""
    for r in decoding:
        r.generated += 1
    for r, chunk in chunked:
        r.computed += chunk
        if r.computed == r.prompt:  # the last chunk yields the first output token
            r.generated = 1
            first_token_s[r.request_id] = t1
    if any(r.generated == r.output for r in running):
        for r in running:
            if r.generated == r.output:
                finish_s[r.request_id] = t1
        running = [r for r in running if r.generated < r.output]
    return running


def schedule(
    requests: Sequence[SimRequest],
    config: SchedulerConfig,
    execute: Callable[[tuple[Member, ...]], float],
    gap: Callable[[], float],
) -> ScheduleResult:
    """Run every request to completion; return the steps in time order.

    ``execute(members)`` is called once per step, in order, and returns the
    step's duration in seconds; ``gap()`` returns the CPU time between one
    step's end and the next step's start.
    """
    config.check()
    for req in requests:
        if req.prompt_tokens < 1 or req.output_tokens < 1:
            raise ConfigError(f"request {req.request_id}: needs >= 1 prompt and >= 1 output token")
    pending = deque(sorted(requests, key=lambda r: r.arrival_s))
    waiting: deque[SimRequest] = deque()
    running: list[_Running] = []
    steps: list[Step] = []
    first_token_s: dict[str, float] = {}
    finish_s: dict[str, float] = {}
    max_seqs, max_tokens = config.max_num_seqs, config.max_num_batched_tokens
    t = 0.0
    while pending or waiting or running:
        while pending and pending[0].arrival_s <= t:
            waiting.append(pending.popleft())
        if not waiting and not running:
            t = pending[0].arrival_s  # idle until the next arrival
            continue
        members, decoding, chunked = _compose(running, waiting, max_seqs, max_tokens)
        batch = tuple(members)
        t1 = t + execute(batch)
        steps.append(Step(t, t1, batch))
        running = _advance(running, decoding, chunked, t1, first_token_s, finish_s)
        t = t1 + gap()
    return ScheduleResult(steps, first_token_s, finish_s)
