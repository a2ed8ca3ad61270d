"""The table of jouletrace's observable instruments: name, unit, meaning, and how each reads a snapshot.

Each :class:`ObservableSpec` turns one :class:`~sidecar.attribution.records.Snapshot`
into ``(value, attributes)`` pairs. Units are OTel/UCUM units; the Prometheus
reader turns them into name suffixes (``J`` -> ``_joules``, ``W`` -> ``_watts``,
``s`` -> ``_seconds``, ``By`` -> ``_bytes``, ``Hz`` -> ``hertz``; ``1`` and
``{annotations}`` add nothing; counters add ``_total``). Values are in the unit
named: joules, watts, seconds, bytes, hertz, or a plain ratio/count.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from sidecar.attribution.records import Snapshot
from sidecar.export.readings import (
    Points,
    dropped,
    fit,
    fit_per_token,
    floor_age,
    hertz,
    job_failures,
    output_units,
    per_device,
    phase_energy,
    server_state,
    stat,
    tap_events,
    throughput_per_watt,
    token_mismatch,
)

__all__ = [
    "ENERGY_PER_OUTPUT_TOKEN",
    "ENERGY_PER_OUTPUT_UNIT",
    "OBSERVABLES",
    "REQUEST_ENERGY",
    "TENANT_ENERGY",
    "TENANT_OUTPUT_TOKENS",
    "ObservableSpec",
]

REQUEST_ENERGY = "gen_ai.server.request.energy"
ENERGY_PER_OUTPUT_TOKEN = "gen_ai.server.energy_per_output_token"
# J per image / video / frame / video second (jouletrace.unit), one observation per diffusion request
ENERGY_PER_OUTPUT_UNIT = "gen_ai.server.energy_per_output_unit"

# per tenant (jouletrace.tenant: top-N by energy, then "other"; sidecar/export/tenants.py), from final
# records: J by tenant, and output tokens by tenant so J/token by tenant is one ratio of two rates
TENANT_ENERGY = "gen_ai.server.tenant.energy"
TENANT_OUTPUT_TOKENS = "gen_ai.server.tenant.output_tokens"


@dataclass(frozen=True, slots=True)
class ObservableSpec:
    """One observable instrument: a counter (monotonic, cumulative) or a gauge."""

    name: str
    unit: str
    description: str
    counter: bool
    observe: Callable[[Snapshot], Points]


_DEVICE = "per device (hw.id = GPU UUID)"

OBSERVABLES: tuple[ObservableSpec, ...] = (
    # --- hardware: the meter's view of each device
    ObservableSpec(
        "hw.energy",
        "J",
        f"Energy consumed since the sidecar started, in joules (J), {_DEVICE}.",
        True,
        per_device(lambda d: d.energy_j),
    ),
    ObservableSpec(
        "hw.power", "W", f"Power draw, in watts (W), {_DEVICE}.", False, per_device(lambda d: d.power_w)
    ),
    ObservableSpec(
        "hw.gpu.utilization",
        "1",
        f"GPU utilization as a ratio 0..1, {_DEVICE}.",
        False,
        per_device(lambda d: d.utilization),
    ),
    ObservableSpec(
        "hw.gpu.memory.usage",
        "By",
        f"GPU memory in use, in bytes (By), {_DEVICE}.",
        False,
        per_device(lambda d: d.memory_used_bytes),
    ),
    ObservableSpec(
        "jouletrace.gpu.sm_clock",
        "Hz",
        f"Streaming-multiprocessor clock, in hertz (Hz), {_DEVICE}.",
        False,
        per_device(hertz),
    ),
    ObservableSpec(
        "jouletrace.gpu.power_limit",
        "W",
        f"Enforced power limit, in watts (W), {_DEVICE}.",
        False,
        per_device(lambda d: d.power_limit_w),
    ),
    ObservableSpec(
        "jouletrace.meter.phase_locked",
        "1",
        "1 while the reads of a device are phase-locked to its counter's update grid, 0 while it searches "
        f"(fixed-period reads); absent for meters read on a fixed period, {_DEVICE}.",
        False,
        per_device(lambda d: None if d.phase_locked is None else float(d.phase_locked)),
    ),
    ObservableSpec(
        "jouletrace.meter.phase_error",
        "s",
        "Half the room the recent reads leave a device's fitted update grid, in seconds (s): how well "
        f"its phase is locked (updates are dated within about this), {_DEVICE}.",
        False,
        per_device(lambda d: d.phase_error_s),
    ),
    # --- inference: attributed energy and output
    ObservableSpec(
        "gen_ai.server.energy",
        "J",
        "Energy attributed per model and phase (prefill, decode, denoise, idle), in joules (J).",
        True,
        phase_energy,
    ),
    ObservableSpec(
        "gen_ai.server.output.units",
        "{unit}",
        "Output produced per model, counted in jouletrace.unit (tokens, images or videos).",
        True,
        output_units,
    ),
    ObservableSpec(
        "gen_ai.server.throughput_per_watt",
        "{unit}",  # units/s per W; "{unit}/s/W" would make Prometheus append an abbreviated-unit suffix
        "Output units per second per watt (= output units per joule) over the recent window, per model.",
        False,
        throughput_per_watt,
    ),
    # --- the sidecar's own health
    ObservableSpec(
        "jouletrace.meter.update_period",
        "s",
        "Measured update period of the energy counter, in seconds (s).",
        False,
        stat(lambda s: s.stats.update_period_s),
    ),
    ObservableSpec(
        "jouletrace.attribution.lag",
        "s",
        "Now minus the end of the last sealed attribution tick, in seconds (s).",
        False,
        stat(lambda s: s.stats.tick_lag_s),
    ),
    ObservableSpec(
        "jouletrace.events.dropped",
        "{event}",
        "Work events dropped, per reason (count).",
        True,
        dropped,
    ),
    ObservableSpec(
        "jouletrace.job.failures",
        "{failure}",
        "Runs of a periodic job (tick) that raised, and ticks in which one tap's hand-on raised "
        "(tap:<class>: the tick went on without that tap's work); /readyz is unready while the tick "
        "keeps failing (count).",
        True,
        job_failures,
    ),
    ObservableSpec(
        "jouletrace.conservation.error",
        "J",
        "|measured - attributed - idle| over all sealed ticks, in joules (J); should stay near 0.",
        False,
        stat(lambda s: s.stats.conservation_error_j, sourced=True),
    ),
    ObservableSpec(
        "jouletrace.meter.resets",
        "{reset}",
        "Energy-counter resets and wraps handled (count).",
        True,
        stat(lambda s: s.stats.counter_resets),
    ),
    ObservableSpec(
        "jouletrace.requests.pending",
        "{request}",
        "Requests whose energy is not final yet (count).",
        False,
        stat(lambda s: s.stats.pending_requests),
    ),
    ObservableSpec(
        "jouletrace.tap.events",
        "{event}",
        "What each tap received, ignored, dropped or lost, per tap and outcome (count).",
        True,
        tap_events,
    ),
    ObservableSpec(
        "jouletrace.tap.token_mismatch",
        "{token}",
        "Tokens by which vLLM's /metrics counters exceed the plugin's iterations, per phase "
        "(0 when the taps agree).",
        False,
        token_mismatch,
    ),
    ObservableSpec(
        "jouletrace.server.state",
        "1",
        "The inference server's latent state: running and waiting requests (count), KV-cache usage (0..1).",
        False,
        server_state,
    ),
    # --- the fitted energy model: the study's diagnosis
    ObservableSpec(
        "jouletrace.model.static_power",
        "W",
        "Idle power floor, measured from idle ticks (or set by floor_w), drawn busy or idle, in watts (W).",
        False,
        fit(lambda s: s.fit.static_w),
    ),
    ObservableSpec(
        "jouletrace.model.busy_power",
        "W",
        "Fitted extra power while the accelerator is busy, in watts (W).",
        False,
        fit(lambda s: s.fit.busy_w),
    ),
    ObservableSpec(
        "jouletrace.model.energy_per_step",
        "J",
        "Fitted fixed energy per engine step (weights streamed once per step), in joules (J).",
        False,
        fit(lambda s: s.fit.j_per_step),
    ),
    ObservableSpec(
        "jouletrace.model.energy_per_token",
        "J",
        "Fitted energy per processed token, per phase (prefill, decode), in joules (J).",
        False,
        fit_per_token,
    ),
    ObservableSpec(
        "jouletrace.model.energy_per_context_token",
        "J",
        "Fitted attention energy per token of context per step, in joules (J).",
        False,
        fit(lambda s: s.fit.j_per_context_token),
    ),
    ObservableSpec(
        "jouletrace.model.energy_per_denoise_unit",
        "J",
        "Fitted energy per denoising work unit (pixels x frames x steps), in joules (J).",
        False,
        fit(lambda s: s.fit.j_per_denoise_unit),
    ),
    ObservableSpec(
        "jouletrace.model.fit_r2",
        "1",
        "Coefficient of determination (R^2) of the energy fit over its window.",
        False,
        fit(lambda s: s.fit.r2),
    ),
    ObservableSpec(
        "jouletrace.model.fit_condition",
        "1",
        "Condition number of the energy fit's window (large: the work coefficients are not pinned down).",
        False,
        fit(lambda s: s.fit.condition),
    ),
    ObservableSpec(
        "jouletrace.model.fit_ok",
        "1",
        "1 while the fit is well conditioned with a measured (or given) idle floor, else 0.",
        False,
        fit(lambda s: 1.0 if s.fit.ok else 0.0),
    ),
    ObservableSpec(
        "jouletrace.model.step_time_spread",
        "1",
        "RMS of ln(measured / predicted duration) of the scheduler hook's steps: how far weighing a "
        "step's work by its duration moves it (0: not at all; before a fit; fit_step_weight=tokens).",
        False,
        fit(lambda s: s.fit.step_time_spread),
    ),
    ObservableSpec(
        "jouletrace.model.floor_age",
        "s",
        "Seconds since the idle floor was last observed (an idle tick or a restored measurement).",
        False,
        floor_age,
    ),
)
