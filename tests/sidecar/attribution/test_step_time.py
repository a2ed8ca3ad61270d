"""Each engine step's measured duration against its work's: docs/attribution.md section 5, by hand.

One tick of 100 ms, 30.0 J measured; the fit says floor 75 W, 2 J per step, prefill 30 mJ and
decode 32 mJ per token, prefill attention 0.7 uJ per query-key pair, decode attention 17 uJ per
context token. Three 25 ms steps with 12.5 ms of idle CPU gaps between them:

* step 1 [0, 25] ms: A and B decode one token each (A's context 1000, B's 200);
* step 2 [37.5, 62.5] ms: A and B decode, C prefills a 512-token chunk (131,328 query-key pairs);
* step 3 [75, 100] ms: A and B decode.

Every step took what the step-time fit predicts (25 ms): every ratio is 1, and the split is the
table of section 5: A 5.458 J, B 5.416 J, C 17.199 J, idle 1.926 J. Then step 2 took 30 ms
([35, 65] ms) where its work predicts 25: its work weighs 1.2 times its tokens, and the split is
A 5.119 J, B 5.079 J, C 18.426 J, idle 1.376 J (the variant in section 5).
"""

from __future__ import annotations

import numpy as np
import pytest

from sidecar.attribution.events import Phase
from sidecar.attribution.fit import Coefficients, work_features
from sidecar.attribution.rules import FittedRule
from sidecar.attribution.step_time import StepGroups, StepTimeFit, step_groups
from sidecar.attribution.tick import EventArrays, TickWork, cut_tick

A, B, C = 0, 1, 2
DEC, PRE = int(Phase.DECODE), int(Phase.PREFILL)
COEF = Coefficients(75.0, 2.0, 0.030, 0.032, 0.7e-6, 17e-6, 0.0)
PAIRS = 512 * (0 - (512 - 1) / 2.0) + 512 * 512  # 512 tokens from an empty cache: 131,328
# (request, phase, units, context) of each step's members
STEPS = [
    [(A, DEC, 1, 1000), (B, DEC, 1, 200)],
    [(A, DEC, 1, 1000), (B, DEC, 1, 200), (C, PRE, 512, PAIRS)],
    [(A, DEC, 1, 1000), (B, DEC, 1, 200)],
]


def _arrays(rows: list[tuple[float, ...]]) -> EventArrays:
    """EventArrays of (request, phase, t0, t1, units, steps, context, timed) rows."""
    cols = list(zip(*rows, strict=True))
    ints = (np.asarray(c, dtype=int) for c in cols[:2])
    return EventArrays(*ints, *(np.asarray(c, dtype=float) for c in cols[2:]))


def _tick_rows(times_s: list[tuple[float, float]], timed: float = 1.0) -> EventArrays:
    steps = zip(times_s, STEPS, strict=True)
    return _arrays([(r, ph, t0, t1, u, 1.0, c, timed) for (t0, t1), m in steps for r, ph, u, c in m])


def _tick(times_s: list[tuple[float, float]], timed: float = 1.0) -> TickWork:
    return cut_tick(_tick_rows(times_s, timed), 0.0, 0.1, 30.0)


def _split(tick: TickWork, step_s: list[float] | None, weigh: bool = True) -> dict[str, float]:
    rule = FittedRule(step_time=weigh)
    rule.fit.coef = COEF
    if step_s is not None and rule.step_time is not None:  # 24 ms a step + 0.5 ms a decode token
        rule.step_time.coef = np.array([step_s[0], 0.0, step_s[1], 0.0, 0.0])
    split = rule.split(tick)
    got = {name: float(split.row_j[tick.req == code].sum()) for name, code in (("A", A), ("B", B), ("C", C))}
    got["idle"] = split.idle_j
    return got


EVEN = [(0.0, 0.025), (0.0375, 0.0625), (0.075, 0.1)]
SLOW_2 = [(0.0, 0.025), (0.035, 0.065), (0.075, 0.1)]


def test_the_worked_example_of_section_5_when_every_step_took_what_its_work_predicts() -> None:
    assert PAIRS == 131_328
    for fit in (None, [0.024, 0.0005]):  # no step-time fit yet, or one that predicts every step right
        got = _split(_tick(EVEN), fit)
        assert got == pytest.approx({"A": 5.458, "B": 5.416, "C": 17.199, "idle": 1.926}, abs=1e-3)


def test_a_step_that_took_longer_than_its_work_predicts_weighs_its_work_more() -> None:
    got = _split(_tick(SLOW_2), [0.024, 0.0005])
    assert got == pytest.approx({"A": 5.119, "B": 5.079, "C": 18.426, "idle": 1.376}, abs=1e-3)
    assert sum(got.values()) == pytest.approx(30.0)


def test_rows_a_tap_inferred_are_priced_by_their_tokens_alone() -> None:
    """The plugin's iterations (not timed): the slow step changes the floor's time shares only."""
    untimed = _split(_tick(SLOW_2, timed=0.0), [0.024, 0.0005])
    no_fit = _split(_tick(SLOW_2), None)
    assert untimed == pytest.approx(no_fit)


def test_fit_step_weight_tokens_prices_every_step_by_its_tokens_alone() -> None:
    assert _split(_tick(SLOW_2), [0.024, 0.0005], weigh=False) == pytest.approx(_split(_tick(SLOW_2), None))


def test_the_steps_of_a_tick_are_its_timed_intervals_each_alone() -> None:
    groups = step_groups(_tick(SLOW_2))
    assert groups.group.tolist() == [0, 0, 1, 1, 1, 2, 2]
    assert groups.tau_s == pytest.approx([0.025, 0.030, 0.025])
    assert groups.work[1] == pytest.approx([1.0, 512.0, 2.0, PAIRS, 1200.0])
    assert groups.whole.tolist() == [True, True, True]
    half = cut_tick(_tick_rows(SLOW_2), 0.0, 0.05, 15.0)  # step 2 cut at 50 ms: half of it, pro rata
    cut = step_groups(half)
    assert cut.tau_s[1] == pytest.approx(0.015)
    assert cut.work[1] == pytest.approx(np.array([1.0, 512.0, 2.0, PAIRS, 1200.0]) * 0.5)
    assert cut.whole.tolist() == [True, False]


def test_a_step_overlapped_by_other_work_is_not_a_step() -> None:
    rows = _tick_rows(EVEN)
    span_row = [C, DEC, 0.05, 0.06, 3, 3, 0, 0]  # a span's decode piece (not timed) inside step 2
    span = EventArrays(*(np.concatenate([c, [v]]) for c, v in zip(_cols(rows), span_row, strict=True)))
    groups = step_groups(cut_tick(span, 0.0, 0.1, 30.0))
    assert groups.group.tolist()[2:5] == [-1, -1, -1]  # step 2, with the span's row inside it
    assert groups.group.tolist()[-1] == -1  # the span's row (not timed)


def _cols(ev: EventArrays) -> tuple[np.ndarray, ...]:
    return (ev.req, ev.phase, ev.t0, ev.t1, ev.units, ev.steps, ev.ctx, ev.timed)


def test_the_step_time_fit_learns_linear_durations_and_clips_its_ratios() -> None:
    rng = np.random.default_rng(7)
    fit = StepTimeFit(window=1000, refit_steps=200)
    for _ in range(60):  # 60 ticks of 5 steps: 6 ms + 40 us a prefill token + 60 us a decode
        tick, _ = _random_tick(rng)
        fit.add(step_groups(tick))
    assert fit.coef is not None
    assert fit.coef[:3] == pytest.approx([6e-3, 40e-6, 60e-6], rel=1e-6)
    assert fit.spread == pytest.approx(0.0, abs=1e-9)  # every step as long as its work predicts
    tick, _ = _random_tick(rng, slow=1.2)
    assert fit.ratios(step_groups(tick)) == pytest.approx(np.full(tick.rows.size, 1.2))
    tick, _ = _random_tick(rng, slow=5.0)
    assert fit.ratios(step_groups(tick)) == pytest.approx(np.full(tick.rows.size, 2.0))
    tick, _ = _random_tick(rng, slow=0.1)
    assert fit.ratios(step_groups(tick)) == pytest.approx(np.full(tick.rows.size, 0.5))


def _random_tick(rng: np.random.Generator, slow: float = 1.0) -> tuple[TickWork, np.ndarray]:
    rows, taus, t = [], [], 0.0
    for _ in range(5):
        pre = int(rng.integers(0, 600))
        dec = int(rng.integers(1, 30))
        tau = (6e-3 + 40e-6 * pre + 60e-6 * dec) * slow
        if pre:
            rows.append((99, PRE, t, t + tau, pre, 1.0, 0.0, 1.0))
        rows += [(i, DEC, t, t + tau, 1.0, 1.0, 0.0, 1.0) for i in range(dec)]
        taus.append(tau)
        t += tau + 1e-3
    return cut_tick(_arrays(rows), 0.0, t, 1.0), np.asarray(taus)


def test_the_spread_of_step_durations_around_their_prediction_is_in_the_snapshot() -> None:
    rule = FittedRule()
    assert rule.step_time is not None
    rng = np.random.default_rng(3)
    for i in range(120):  # every other step 10 % slower than the rest: ln(1.1) / 2 either side of the fit
        tick, _ = _random_tick(rng, slow=1.1 if i % 2 else 1.0)
        rule.step_time.add(step_groups(tick))
    assert 0.03 < rule.snapshot().step_time_spread < 0.06
    assert FittedRule(step_time=False).snapshot().step_time_spread == 0.0


def test_the_interval_holds_what_weighing_by_duration_moved() -> None:
    """A record's interval widens by what the duration ratios moved of its energy: where the split
    by tokens alone and the weighed split disagree, neither is known to be the truth."""
    weighed, plain = FittedRule(), FittedRule(step_time=False)
    for rule in (weighed, plain):
        rule.fit.coef = COEF
    assert weighed.step_time is not None
    weighed.step_time.coef = np.array([0.024, 0.0, 0.0005, 0.0, 0.0])
    tick = _tick(SLOW_2)
    w, p = weighed.split(tick), plain.split(tick)
    assert w.unexplained_j is not None
    ratio = weighed.step_time.ratios(step_groups(tick))  # 1.2 for step 2's rows, 1 for the others
    rows_model = COEF.floor_w * tick.time_share + (work_features(tick) * ratio[:, None]) @ COEF.work
    moved = np.abs(w.row_j - p.row_j)
    assert moved.max() > 0.1  # C's prefill in the slow step
    assert w.unexplained_j == pytest.approx(np.abs(w.row_j - rows_model) + moved)
    even = _tick(EVEN)  # every step as predicted: nothing moved
    assert weighed.split(even).unexplained_j == pytest.approx(plain.split(even).unexplained_j)


def _feed(fit: StepTimeFit, rng: np.random.Generator, jitter: float, chunk_saving: float) -> None:
    """2,000 steps: 32 decodes each (context growing a token a step), every 10th also prefilling a
    chunk of 64-2,048 tokens whose time per token falls by ``chunk_saving`` at 2,048; every step's
    time times a log-normal ``jitter``."""
    context = 32_000.0
    for i in range(400):
        work, tau = [], []
        for j in range(5):
            chunk = float(rng.integers(64, 2049)) if (5 * i + j) % 10 == 0 else 0.0
            context += 32.0
            work.append([1.0, chunk, 32.0, chunk * chunk / 2, context])
            effective = chunk * (1.0 - chunk_saving * chunk / 2048.0)
            tau.append((6e-3 + 40e-6 * effective + 60e-6 * 32 + 40e-9 * context) * rng.lognormal(0.0, jitter))
        fit.add(StepGroups(np.zeros(0, dtype=np.intp), np.asarray(tau), np.asarray(work)))


def test_step_to_step_noise_is_not_weighed_and_a_departure_of_prefill_steps_is() -> None:
    """Decode steps that differ only by noise keep (almost) none of their ratio; steps with a prefill,
    whose chunk saving departs from the linear prediction by more than that noise, keep most."""
    fit = StepTimeFit()
    _feed(fit, np.random.default_rng(11), jitter=0.05, chunk_saving=0.3)
    assert fit.weight[0] < 0.2
    assert fit.weight[1] > 0.6


def test_without_noise_every_ratio_is_kept_whole() -> None:
    fit = StepTimeFit()
    _feed(fit, np.random.default_rng(12), jitter=0.0, chunk_saving=0.3)
    assert fit.weight == pytest.approx([1.0, 1.0])
