"""LoopingSim chains simulated runs into an endless GPU: one unbroken counter, work with unique ids.

Run ``k`` is ``simulate(config, seed + k)`` started on the clock where run
``k - 1`` ended. Every test drives a fake clock; the small config (10
requests, about 10 s per run) keeps each run cheap.
"""

from __future__ import annotations

import contextlib
import itertools
import threading
from collections import Counter

import numpy as np
import pytest

from sidecar.attribution.events import RequestInfo, WorkEvent
from sidecar.meters.base import EnergyMeter, EnergySource
from sidecar.sim.loop import LoopingSim
from sidecar.sim.run import SimConfig, SimRun, simulate
from sidecar.sim.workload import WorkloadConfig

CONFIG = SimConfig(workload=WorkloadConfig(n_requests=10))
SEED = 4
T0 = 1000.0  # clock time of the first run's simulated 0


class FakeClock:
    def __init__(self, t_s: float) -> None:
        self.t_s = t_s

    def __call__(self) -> float:
        return self.t_s


@pytest.fixture(scope="module")
def runs() -> tuple[SimRun, SimRun]:
    """The first two runs, as LoopingSim builds them."""
    return simulate(CONFIG, SEED), simulate(CONFIG, SEED + 1)


def drain(
    sim: LoopingSim, until_s: float, from_s: float = T0, step_s: float = 0.1
) -> tuple[list[WorkEvent], list[RequestInfo]]:
    """Call ``due`` every ``step_s`` from ``from_s`` to ``until_s``, as the sidecar's tick does."""
    events: list[WorkEvent] = []
    infos: list[RequestInfo] = []
    for now in np.arange(from_s, until_s, step_s):
        ev, inf = sim.due(float(now))
        events += ev
        infos += inf
    return events, infos


def test_a_looping_sim_is_a_simulated_energy_meter() -> None:
    sim = LoopingSim(CONFIG, SEED, clock=FakeClock(T0))
    assert isinstance(sim, EnergyMeter)
    assert sim.source is EnergySource.SIMULATED
    assert [d.id for d in sim.devices] == ["GPU-sim-0"]


def test_the_first_run_reads_its_own_counter_on_the_clock(runs: tuple[SimRun, SimRun]) -> None:
    first, _ = runs
    clock = FakeClock(T0)
    sim = LoopingSim(CONFIG, SEED, clock=clock)
    for sim_t in (0.0, 0.5, first.duration_s / 2, first.duration_s - 0.01):
        clock.t_s = T0 + sim_t
        assert sim.read().energy_j == (first.counter.value_at(sim_t),)
        assert sim.read().t_s == clock.t_s


def test_the_counter_carries_on_across_the_end_of_a_run_without_a_drop(runs: tuple[SimRun, SimRun]) -> None:
    first, second = runs
    end_s = T0 + first.duration_s
    clock = FakeClock(T0)
    sim = LoopingSim(CONFIG, SEED, clock=clock)
    values = []
    for t in np.arange(T0, end_s + second.duration_s + 3.0, 0.02):  # into the third run
        clock.t_s = float(t)
        values.append(sim.read().energy_j[0])
    assert np.all(np.diff(values) >= 0), "the chained counter went backwards"
    carried = first.counter.value_at(first.duration_s)
    clock.t_s = end_s  # the second run's simulated 0: its counter has not updated yet
    assert sim.read().energy_j[0] == pytest.approx(carried)
    clock.t_s = end_s + 1.0  # within the second run: first run's total plus the second's counter
    assert sim.read().energy_j[0] == pytest.approx(carried + second.counter.value_at(1.0))


def test_status_follows_the_run_that_is_playing(runs: tuple[SimRun, SimRun]) -> None:
    first, second = runs
    clock = FakeClock(T0 + first.duration_s + second.duration_s / 2)
    sim = LoopingSim(CONFIG, SEED, clock=clock, t0=T0)
    (status,) = sim.status()
    assert status.device_id == "GPU-sim-0"
    assert status.power_w == second.trace.power_at(second.duration_s / 2)


def test_request_ids_carry_the_run_index_and_never_repeat(runs: tuple[SimRun, SimRun]) -> None:
    first, second = runs
    sim = LoopingSim(CONFIG, SEED, clock=FakeClock(T0))
    _, infos = drain(sim, T0 + first.duration_s + second.duration_s + 0.05)
    ids = [i.request_id for i in infos]
    assert len(ids) == len(set(ids))
    assert sorted(ids) == sorted(
        [f"r0-{r.request_id}" for r in first.requests] + [f"r1-{r.request_id}" for r in second.requests]
    )
    assert {i.split("-", 1)[0] for i in ids} == {"r0", "r1"}


def test_due_releases_the_work_of_both_runs_once_each_on_the_clock(runs: tuple[SimRun, SimRun]) -> None:
    first, second = runs
    start_2 = T0 + first.duration_s
    sim = LoopingSim(CONFIG, SEED, clock=FakeClock(T0))
    events, infos = drain(sim, start_2 + second.duration_s + 0.05)

    def key(e: WorkEvent) -> tuple[str, float, float, str]:
        return (e.request_id, round(e.t0_s, 9), round(e.t1_s, 9), str(e.phase))

    expected = [
        (f"r{k}-{e.request_id}", round(e.t0_s + start, 9), round(e.t1_s + start, 9), str(e.phase))
        for k, (run, start) in enumerate([(first, T0), (second, start_2)])
        for e in run.events
    ]
    released = Counter(key(e) for e in events)
    assert max(released.values()) == 1, "an event was released twice"
    assert sorted(released) == sorted(expected)
    second_run_infos = [i for i in infos if i.request_id.startswith("r1-")]
    assert all(i.start_s is not None and i.start_s >= start_2 for i in second_run_infos)


def test_nothing_is_released_twice_when_due_is_asked_about_the_same_time_again(
    runs: tuple[SimRun, SimRun],
) -> None:
    first, _ = runs
    sim = LoopingSim(CONFIG, SEED, clock=FakeClock(T0))
    end_s = T0 + first.duration_s + 0.5
    events, infos = sim.due(end_s)
    assert events and infos
    assert sim.due(end_s) == ([], [])


def test_a_read_on_the_poller_thread_and_due_on_the_loop_at_a_run_boundary_release_each_request_once(
    runs: tuple[SimRun, SimRun], monkeypatch: pytest.MonkeyPatch
) -> None:
    """In the sidecar, read() runs on the poller thread while due() runs on the event loop."""
    first, second = runs
    barrier = threading.Barrier(2, timeout=1.0)
    calls = itertools.count()

    def simulate_meeting_the_other_thread(config: SimConfig, seed: int) -> SimRun:
        # Two calls at once only happen without a lock; with one, the wait times out after 1 s.
        if next(calls) < 2:
            with contextlib.suppress(threading.BrokenBarrierError):
                barrier.wait()
        return simulate(config, seed)

    clock = FakeClock(T0)
    sim = LoopingSim(CONFIG, SEED, clock=clock)
    monkeypatch.setattr("sidecar.sim.loop.simulate", simulate_meeting_the_other_thread)
    events, infos = drain(sim, T0 + first.duration_s / 2)

    boundary_s = T0 + first.duration_s + 0.05  # just past the first run's end
    clock.t_s = boundary_s
    poller = threading.Thread(target=sim.read)
    poller.start()
    ev, inf = sim.due(boundary_s)
    poller.join(5.0)
    assert not poller.is_alive()
    more_events, more_infos = drain(sim, boundary_s + second.duration_s, from_s=boundary_s + 0.1)
    events += ev + more_events
    infos += inf + more_infos

    ids = Counter(i.request_id for i in infos)
    assert [rid for rid, n in ids.items() if n > 1] == []
    assert len(events) == len(first.events) + len(second.events)
