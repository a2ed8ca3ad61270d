"""One simulated serving run: workload -> scheduler -> GPU model -> counter, with ground truth.

``simulate(config, seed)`` returns a :class:`SimRun`: the steps, the work
events a tap would deliver, the request records, the exact energy each
request caused (``truth_j``, split by phase in ``truth_phase_j``), the idle
energy no request caused, and the NVML-like counter over the whole run.
Times are simulated seconds from 0; energies joules. Invariant:
``sum(truth_j.values()) + idle_truth_j == total_j`` (to float rounding).

Event modes:

- ``iteration`` (default): one :class:`WorkEvent` per member per step, as the
  vLLM stat-logger plugin would tell: ``t0_s``/``t1_s`` = the step,
  ``units`` = tokens processed, ``steps`` = 1, ``context_tokens`` = the
  attention work (query-key pairs, see :func:`attention_work`).
- ``phase``: per request one prefill event (first prefill step's start to the
  end of the step that finished the prompt; units = prompt tokens) and, if it
  decoded, one decode event (first token to last token; units = output
  tokens - 1), each with ``steps`` = the number of steps it was in and
  ``context_tokens`` summed over them, as vLLM's request spans tell.

Gap truth: the CPU gap after a step (0.5-3 ms at ``idle_w``) is idle truth by
default (``gap_truth="idle"``): the GPU would draw it with no request. The
sidecar, though, calls idle only ticks with no work in flight, so it gives
those joules (~2-4 % of the total at small batches) to the requests;
``gap_truth="shared"`` makes the truth agree with that view by splitting each
CPU gap equally among the members of the step before it. Idle waits for an
arrival are idle truth either way.

The seed is split into independent streams for the workload, the GPU model
and the counter, so changing e.g. the counter's period leaves the workload
and the steps unchanged.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import numpy as np
from numpy.typing import NDArray

from sidecar.attribution.events import Phase, RequestInfo, WorkEvent
from sidecar.errors import ConfigError
from sidecar.sim.counter import CounterConfig, EnergyTrace, FloatArray, SimCounter
from sidecar.sim.gpu import GpuConfig, GpuModel, StepCost
from sidecar.sim.scheduler import Member, SchedulerConfig, Step, schedule
from sidecar.sim.workload import SimRequest, WorkloadConfig, generate

__all__ = ["MODEL_NAME", "EventMode", "SimConfig", "SimRun", "attention_work", "simulate"]

EventMode = Literal["iteration", "phase"]
GapTruth = Literal["idle", "shared"]
MODEL_NAME = "sim-llm"


@dataclass(frozen=True, slots=True)
class SimConfig:
    """Everything a run depends on besides the seed. ``tail_s``: idle after the last step."""

    workload: WorkloadConfig = field(default_factory=WorkloadConfig)
    scheduler: SchedulerConfig = field(default_factory=SchedulerConfig)
    gpu: GpuConfig = field(default_factory=GpuConfig)
    counter: CounterConfig = field(default_factory=CounterConfig)
    event_mode: EventMode = "iteration"
    gap_truth: GapTruth = "idle"
    tail_s: float = 1.0

    def check(self) -> None:
        """Raise :class:`ConfigError` naming the knob that is invalid."""
        self.workload.check()
        self.scheduler.check()
        self.gpu.check()
        self.counter.check()
        if self.event_mode not in ("iteration", "phase"):
            raise ConfigError(f"sim.event_mode must be 'iteration' or 'phase', got {self.event_mode!r}")
        if self.gap_truth not in ("idle", "shared"):
            raise ConfigError(f"sim.gap_truth must be 'idle' or 'shared', got {self.gap_truth!r}")
        if not self.tail_s >= 0:
            raise ConfigError(f"sim.tail_s must be >= 0, got {self.tail_s}")


@dataclass(frozen=True, slots=True)
class SimRun:
    """The result of :func:`simulate`. Times in simulated s from 0, energies in J.

    ``events`` are sorted by ``t1_s``; ``requests`` follow the workload's
    order. ``truth_phase_j[request_id]`` has both ``Phase.PREFILL`` and
    ``Phase.DECODE`` keys. ``step_energy_j[k]`` is the energy of ``steps[k]``.
    ``cpu_gap_j``: energy drawn in the CPU gaps right after steps (at ``idle_w``),
    part of ``idle_truth_j`` unless ``gap_truth="shared"``.
    """

    config: SimConfig
    seed: int
    workload: list[SimRequest]
    steps: list[Step]
    step_energy_j: FloatArray
    step_capped: NDArray[np.bool_]
    events: list[WorkEvent]
    requests: list[RequestInfo]
    first_token_s: dict[str, float]
    truth_j: dict[str, float]
    truth_phase_j: dict[str, dict[Phase, float]]
    idle_truth_j: float
    cpu_gap_j: float
    total_j: float
    duration_s: float
    counter: SimCounter

    @property
    def trace(self) -> EnergyTrace:
        """The exact energy over time (the counter's source)."""
        return self.counter.trace


def _cpu_gap_j(steps: list[Step], gaps_s: list[float], duration_s: float, idle_w: float) -> FloatArray:
    """The CPU gap's energy after each step (not the idle wait for an arrival that may follow it)."""
    if not steps:
        return np.zeros(0)
    next_t0 = np.array([s.t0_s for s in steps[1:]] + [duration_s])
    t1 = np.array([s.t1_s for s in steps])
    gap_j: FloatArray = idle_w * np.minimum(np.array(gaps_s), next_t0 - t1)
    return gap_j


def _truth(
    workload: list[SimRequest], steps: list[Step], costs: list[StepCost], gap_j: FloatArray, shared: bool
) -> tuple[dict[str, float], dict[str, dict[Phase, float]]]:
    """Each request's true energy, in all and per phase: its step shares (+ its gap shares if ``shared``)."""
    truth_j = {r.request_id: 0.0 for r in workload}
    truth_phase_j = {r.request_id: {Phase.PREFILL: 0.0, Phase.DECODE: 0.0} for r in workload}
    for step, cost, g in zip(steps, costs, gap_j.tolist(), strict=True):
        g_each = g / len(step.members) if shared else 0.0
        for m, e in zip(step.members, cost.member_j, strict=True):
            truth_j[m.request_id] += e + g_each
            truth_phase_j[m.request_id][m.phase] += e + g_each
    return truth_j, truth_phase_j


def _request_infos(workload: list[SimRequest], finish_s: dict[str, float]) -> list[RequestInfo]:
    """What the sidecar learns of each request (as the OTLP tap would tell it)."""
    return [
        RequestInfo(
            request_id=r.request_id,
            model=MODEL_NAME,
            operation="chat",
            task=r.kind,
            start_s=r.arrival_s,
            end_s=finish_s[r.request_id],
            prompt_tokens=r.prompt_tokens,
            output_tokens=r.output_tokens,
            output_units=float(r.output_tokens),
            unit="token",
        )
        for r in workload
    ]


def simulate(config: SimConfig, seed: int) -> SimRun:
    """Run the whole simulation for ``config`` with random stream ``seed``."""
    config.check()
    wl_seed, gpu_seed, counter_seed = np.random.SeedSequence(seed).spawn(3)
    workload = generate(config.workload, np.random.default_rng(wl_seed))
    gpu = GpuModel(config.gpu, np.random.default_rng(gpu_seed))
    costs: list[StepCost] = []

    def execute(members: tuple[Member, ...]) -> float:
        cost = gpu.step(members)
        costs.append(cost)
        return cost.tau_s

    gaps_s: list[float] = []

    def gap() -> float:
        g = gpu.gap_s()
        gaps_s.append(g)
        return g

    result = schedule(workload, config.scheduler, execute, gap)
    steps = result.steps
    last_s = steps[-1].t1_s if steps else max((r.arrival_s for r in workload), default=0.0)
    duration_s = last_s + config.tail_s
    gap_j = _cpu_gap_j(steps, gaps_s, duration_s, config.gpu.idle_w)
    shared = config.gap_truth == "shared"
    truth_j, truth_phase_j = _truth(workload, steps, costs, gap_j, shared)
    step_energy_j = np.array([c.energy_j for c in costs], dtype=np.float64)
    trace = EnergyTrace(
        [s.t0_s for s in steps], [s.t1_s for s in steps], step_energy_j, config.gpu.idle_w, duration_s
    )
    counter = SimCounter(trace, config.counter, np.random.default_rng(counter_seed))
    if config.event_mode == "iteration":
        events = _iteration_events(steps)
    else:
        events = _phase_events(steps, result.first_token_s)
    return SimRun(
        config=config,
        seed=seed,
        workload=workload,
        steps=steps,
        step_energy_j=step_energy_j,
        step_capped=np.array([c.capped for c in costs], dtype=bool),
        events=events,
        requests=_request_infos(workload, result.finish_s),
        first_token_s=result.first_token_s,
        truth_j=truth_j,
        truth_phase_j=truth_phase_j,
        idle_truth_j=trace.idle_j - float(gap_j.sum()) if shared else trace.idle_j,
        cpu_gap_j=float(gap_j.sum()),
        total_j=trace.total_j,
        duration_s=duration_s,
        counter=counter,
    )


def attention_work(m: Member) -> float:
    """Query-key pairs a member attends over in a step (``WorkEvent.context_tokens``).

    Decode: one query over the KV length. Prefill: a chunk of ``k`` tokens ending
    at KV length ``L`` under causal attention, ``k * (L - (k - 1) / 2)``.
    """
    if m.phase is Phase.PREFILL:
        return m.tokens * (m.context_tokens - (m.tokens - 1) / 2.0)
    return float(m.tokens * m.context_tokens)


def _iteration_events(steps: list[Step]) -> list[WorkEvent]:
    """One event per member per step."""
    return [
        WorkEvent(m.request_id, s.t0_s, s.t1_s, m.phase, float(m.tokens), 1.0, attention_work(m))
        for s in steps
        for m in s.members
    ]


def _phase_events(steps: list[Step], first_token_s: dict[str, float]) -> list[WorkEvent]:
    """One event per request per phase (see the module docstring for the spans)."""
    # (request, phase) -> [t0, t1, units, steps, context]
    acc: dict[tuple[str, Phase], list[float]] = {}
    for s in steps:
        for m in s.members:
            a = acc.get((m.request_id, m.phase))
            if a is None:
                t0 = s.t0_s if m.phase is Phase.PREFILL else first_token_s[m.request_id]
                acc[(m.request_id, m.phase)] = [t0, s.t1_s, m.tokens, 1.0, attention_work(m)]
            else:
                a[1] = s.t1_s
                a[2] += m.tokens
                a[3] += 1.0
                a[4] += attention_work(m)
    events = [WorkEvent(rid, a[0], a[1], phase, a[2], a[3], a[4]) for (rid, phase), a in acc.items()]
    events.sort(key=lambda e: e.t1_s)
    return events
