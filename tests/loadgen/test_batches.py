"""Diffusion energy per timed batch (batch spans from the server, energy over exactly that interval)."""

from __future__ import annotations

import asyncio

import pytest

from loadgen.analysis import analyse_phase
from loadgen.answers import _batch
from loadgen.batches import batch_figures, measure_batches, timed_batches
from loadgen.records import Request, Result

T0_UNIX = 1_700_000_000.0
POWER_W = 50.0


def _image(i: int, batch: str, size: int, start: float, end: float, energy: float | None) -> Result:
    req = Request(id=f"img{i}", task="text-to-image", api="images", path="/v1/images/generations",
                  body={}, unit="image", units=1.0)  # fmt: skip
    r = Result(request=req, target_s=0.0, sent_s=start - 0.5, finished_s=end + 0.2, output_units=1.0)
    r.batch = {"id": batch, "size": size, "start_unix_s": T0_UNIX + start, "end_unix_s": T0_UNIX + end}
    if energy is not None:
        r.energy = {"energy_j": energy, "final": True}
    return r


def _phase() -> list[Result]:
    # two batches of 2 images, 1 s each at 50 W, with 3 s of idle between them (idle is not a batch's)
    return [
        _image(0, "b1", 2, 1.0, 2.0, 25.0),
        _image(1, "b1", 2, 1.0, 2.0, 25.0),
        _image(2, "b2", 2, 5.0, 6.0, 25.0),
        _image(3, "b2", 2, 5.0, 6.0, 25.0),
    ]


async def _interval(start: float, end: float) -> tuple[float | None, str]:
    return POWER_W * (end - start), ""


def test_batches_are_grouped_by_id_and_timed_by_the_servers_interval() -> None:
    batches = timed_batches(_phase())
    assert [(b.id, b.size, len(b.members)) for b in batches] == [("b1", 2, 2), ("b2", 2, 2)]
    asyncio.run(measure_batches(batches, _interval))
    out = batch_figures(batches)
    assert out["window_energy_j"] == pytest.approx(100.0)  # 2 x 1 s x 50 W, no idle
    assert out["j_per_unit_study"] == pytest.approx(25.0)
    assert out["j_per_unit_per_request_sum"] == pytest.approx(25.0)
    assert out["per_request_vs_study"] == pytest.approx(0.0)
    assert out["foreign_items"] == 0


def test_the_phase_uses_the_timed_batches_not_the_whole_window() -> None:
    results = _phase()
    batches = timed_batches(results)
    asyncio.run(measure_batches(batches, _interval))
    samples = [(t / 10, POWER_W * t / 10) for t in range(0, 100)]  # the whole phase window holds idle
    out = analyse_phase(results, samples, batch_cap=4, unit="image", batches=batches)
    assert out["comparable"] is True
    assert out["j_per_unit_study"] == pytest.approx(25.0)
    assert out["per_request_vs_study"] == pytest.approx(0.0)
    assert out["batches_measured"] == 2


def test_an_unmeasured_batch_is_said_and_a_phase_without_any_is_not_comparable() -> None:
    results = _phase()
    batches = timed_batches(results)

    async def nothing(start: float, end: float) -> tuple[float | None, str]:
        return None, "the sidecar has no /v1/energy"

    asyncio.run(measure_batches(batches, nothing))
    out = analyse_phase(results, [(0.0, 0.0), (10.0, 500.0)], batch_cap=4, unit="image", batches=batches)
    assert out["batches_unmeasured"] == 2 and out["timed_batches"][0]["note"].startswith("the sidecar")
    assert out["comparable"] is False and out["j_per_unit_study"] is None


def test_a_batch_shared_with_another_client_counts_its_foreign_items() -> None:
    results = [_image(0, "b1", 3, 1.0, 2.0, 25.0)]
    batches = timed_batches(results)
    asyncio.run(measure_batches(batches, _interval))
    out = batch_figures(batches)
    assert out["foreign_items"] == 2 and out["j_per_unit_study"] == pytest.approx(50.0 / 3)


@pytest.mark.parametrize(
    "raw",
    [
        None,
        {"size": 2, "start_unix_s": 1.0, "end_unix_s": 2.0},
        {"id": "b", "size": 0, "start_unix_s": 1.0, "end_unix_s": 2.0},
        {"id": "b", "size": 2, "start_unix_s": "1", "end_unix_s": 2.0},
        {"id": "b", "size": 2, "start_unix_s": 3.0, "end_unix_s": 2.0},
        {"id": "b", "size": True, "start_unix_s": 1.0, "end_unix_s": 2.0},
    ],
)
def test_a_malformed_batch_from_the_server_is_dropped(raw: object) -> None:
    assert _batch(raw) is None


def test_a_well_formed_batch_is_kept() -> None:
    raw = {"id": "b", "size": 2, "start_unix_s": 1.0, "end_unix_s": 2.5, "extra": 1}
    assert _batch(raw) == {"id": "b", "size": 2, "start_unix_s": 1.0, "end_unix_s": 2.5}
