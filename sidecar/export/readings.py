"""How each observable instrument reads a snapshot: ``(value, attributes)`` pairs.

The table that names the instruments, their units and meanings is
:mod:`sidecar.export.instruments`; these are the readers its rows point at.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from sidecar.attribution.records import DeviceSnapshot, Snapshot

__all__ = [
    "Points",
    "device_attributes",
    "dropped",
    "fit",
    "fit_per_token",
    "floor_age",
    "hertz",
    "job_failures",
    "output_units",
    "per_device",
    "phase_energy",
    "server_state",
    "stat",
    "tap_events",
    "throughput_per_watt",
    "token_mismatch",
]

Points = Iterable[tuple[float, dict[str, str]]]


def device_attributes(device: DeviceSnapshot, source: str) -> dict[str, str]:
    """The ``hw.*`` attribute set of one device, with the snapshot's ``energy.source``."""
    return {"hw.id": device.id, "hw.type": device.type, "hw.name": device.name, "energy.source": source}


def per_device(value: Callable[[DeviceSnapshot], float | None]) -> Callable[[Snapshot], Points]:
    def observe(snap: Snapshot) -> Points:
        for device in snap.devices:
            v = value(device)
            if v is not None:
                yield v, device_attributes(device, snap.energy_source)

    return observe


def hertz(device: DeviceSnapshot) -> float | None:
    return None if device.sm_clock_mhz is None else device.sm_clock_mhz * 1e6


def phase_energy(snap: Snapshot) -> Points:
    for (model, phase), energy_j in snap.phase_energy_j.items():
        yield (
            energy_j,
            {"gen_ai.request.model": model, "jouletrace.phase": phase, "energy.source": snap.energy_source},
        )


def output_units(snap: Snapshot) -> Points:
    for (model, unit), units in snap.output_units.items():
        yield units, {"gen_ai.request.model": model, "jouletrace.unit": unit}


def throughput_per_watt(snap: Snapshot) -> Points:
    for model, value in snap.throughput_per_watt.items():
        yield value, {"gen_ai.request.model": model, "energy.source": snap.energy_source}


def stat(value: Callable[[Snapshot], float | None], *, sourced: bool = False) -> Callable[[Snapshot], Points]:
    def observe(snap: Snapshot) -> Points:
        v = value(snap)
        if v is not None:
            yield v, ({"energy.source": snap.energy_source} if sourced else {})

    return observe


def dropped(snap: Snapshot) -> Points:
    for reason, count in snap.stats.dropped_events.items():
        yield count, {"reason": reason}


def job_failures(snap: Snapshot) -> Points:
    for job, count in snap.stats.job_failures.items():
        yield count, {"job": job}


def tap_events(snap: Snapshot) -> Points:
    for (tap, outcome), count in snap.stats.taps.events.items():
        yield count, {"jouletrace.tap": tap, "outcome": outcome}


def token_mismatch(snap: Snapshot) -> Points:
    for phase, tokens in snap.stats.taps.token_mismatch.items():
        yield tokens, {"jouletrace.phase": phase}


def server_state(snap: Snapshot) -> Points:
    for quantity, value in snap.stats.taps.server.items():
        yield value, {"jouletrace.quantity": quantity}


def fit(value: Callable[[Snapshot], float]) -> Callable[[Snapshot], Points]:
    """A fitted-model number, shown only once the fit has seen at least one tick."""

    def observe(snap: Snapshot) -> Points:
        if snap.fit.ticks > 0:
            yield value(snap), {"energy.source": snap.energy_source}

    return observe


def fit_per_token(snap: Snapshot) -> Points:
    if snap.fit.ticks > 0:
        yield (
            snap.fit.j_per_prefill_token,
            {"jouletrace.phase": "prefill", "energy.source": snap.energy_source},
        )
        yield snap.fit.j_per_decode_token, {"jouletrace.phase": "decode", "energy.source": snap.energy_source}


def floor_age(snap: Snapshot) -> Points:
    if snap.fit.ticks > 0 and snap.fit.floor_age_s is not None:
        yield (
            snap.fit.floor_age_s,
            {"energy.source": snap.energy_source, "jouletrace.floor_source": snap.fit.floor_source},
        )
