"""What attribution hands out: per-request energy records and the snapshot.

Both are immutable. Exporters read one :class:`Snapshot` per scrape, so every
number on a page agrees; finished :class:`RequestEnergy` records go to the
histograms, the ledger and the HTTP API. Energies are joules, times are
sidecar monotonic seconds unless the name says ``unix``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, fields
from typing import Any

__all__ = [
    "RECORD_FIELDS",
    "DeviceSnapshot",
    "FitSnapshot",
    "RequestEnergy",
    "SelfStats",
    "Snapshot",
    "TapReport",
    "per_unit",
]


@dataclass(frozen=True, slots=True)
class RequestEnergy:
    """Energy attributed to one request, with its breakdown.

    ``final`` is false while ticks that overlap the request are still open;
    ``approximate`` is true when the request's busy window is shorter than the
    counter's update period, so its share rests on few counter updates.
    ``energy_source`` is ``measured``, ``estimate``, ``simulated`` or ``replay``.
    ``energy_low_j``/``energy_high_j`` bound the attribution's uncertainty (an
    estimate of it, about 95 %); ``fit_quality`` says whether the fitted model
    that split the energy was trustworthy when the record was built.
    """

    request_id: str
    model: str
    operation: str
    task: str
    unit: str  # token, image, video
    energy_j: float
    phase_j: dict[str, float]  # prefill / decode / denoise -> J
    # fitted rule only: the model terms busy, step, prefill, decode, context, denoise -> J (scaled)
    component_j: dict[str, float]
    prompt_tokens: int
    output_tokens: int
    output_units: float  # tokens for LLMs, images or videos for diffusion
    start_s: float | None
    end_s: float | None
    end_unix_s: float | None
    busy_s: float  # seconds of accelerator time this request shared in
    approximate: bool
    final: bool
    rule: str
    energy_source: str
    attributes: dict[str, str] = field(default_factory=dict)
    # an estimate of the attribution's own uncertainty: a ~95 % interval (J) around energy_j
    # (fitted rule: from the fit's coefficient covariance and the part the model did not explain)
    energy_low_j: float | None = None
    energy_high_j: float | None = None
    # fitted rule: ok, ill-conditioned, held, floor-unmeasured, floor-stale, warmup ("" for other rules)
    fit_quality: str = ""

    @property
    def joules_per_output_unit(self) -> float | None:
        """J per output token / image / video; ``None`` without output, or where the quotient is not
        a number JSON can carry (a hostile tiny unit count made it Infinity in the API's answer)."""
        return per_unit(self.energy_j, self.output_units)

    def to_json(self) -> dict[str, Any]:
        """The record as the HTTP API and ledger show it."""
        out = {name: getattr(self, name) for name in RECORD_FIELDS}  # asdict's deep copy: 5x slower
        for name in ("phase_j", "component_j", "attributes"):
            out[name] = dict(out[name])
        out["joules_per_output_unit"] = self.joules_per_output_unit
        return out


RECORD_FIELDS = tuple(f.name for f in fields(RequestEnergy))  # in order, as to_json() lists them


@dataclass(frozen=True, slots=True)
class DeviceSnapshot:
    """One device's cumulative energy (J, since the sidecar started) and latest status."""

    id: str
    name: str
    type: str
    energy_j: float
    idle_energy_j: float
    power_w: float | None = None
    utilization: float | None = None
    sm_clock_mhz: float | None = None
    memory_used_bytes: float | None = None
    power_limit_w: float | None = None
    phase_locked: bool | None = None  # reads phase-locked to the counter's grid; None: fixed-period path
    phase_error_s: float | None = None  # half the room the lock's bounds leave its grid (s)


@dataclass(frozen=True, slots=True)
class FitSnapshot:
    """The fitted energy model: the study's diagnosis numbers.

    dE = static_w * tick_s + j_per_step * steps
         + j_per_prefill_token * prefill + j_per_decode_token * decode
         + j_per_prefill_context_token * prefill_pairs
         + j_per_context_token * decode_context + j_per_denoise_unit * denoise_units

    ``static_w`` is the idle floor, measured (``floor_source``: measured,
    restored, override; ``none``: fitted as a last resort). ``busy_w`` is
    descriptive: mean power above the floor over the busy ticks of the window.
    ``condition``: condition number of the fit window's scaled design matrix;
    ``ok``: well-conditioned with a measured or given floor. ``step_time_spread``:
    the RMS of ln(measured / predicted duration) of the scheduler hook's steps
    (:mod:`.step_time`), how far weighing a step's work by its duration moves it.
    """

    static_w: float = 0.0
    busy_w: float = 0.0
    j_per_step: float = 0.0
    j_per_prefill_token: float = 0.0
    j_per_decode_token: float = 0.0
    j_per_context_token: float = 0.0  # decode attention, per KV token read
    j_per_prefill_context_token: float = 0.0  # prefill attention, per query-key pair
    j_per_denoise_unit: float = 0.0
    r2: float = 0.0  # coefficient of determination over the fit window
    ticks: int = 0  # ticks in the fit window
    condition: float = 0.0
    ok: bool = False
    floor_source: str = "none"
    floor_age_s: float | None = None  # since the newest idle observation
    floor_stale: bool = True
    step_time_spread: float = 0.0


@dataclass(frozen=True, slots=True)
class TapReport:
    """What a tap reports about itself (a tap's ``stats()``), for the self-metrics.

    ``events``: (tap, outcome) -> count (received, ignored, dropped, lost, malformed, ...);
    ``token_mismatch``: phase -> tokens by which two taps disagree (vLLM /metrics minus plugin);
    ``server``: the inference server's latent state (running, waiting, kv_cache_usage 0..1).
    """

    events: dict[tuple[str, str], int] = field(default_factory=dict)
    token_mismatch: dict[str, float] = field(default_factory=dict)
    server: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class SelfStats:
    """The sidecar's own health, exported as ``jouletrace.*`` self-metrics."""

    update_period_s: float | None = None  # measured energy-counter update period
    tick_lag_s: float = 0.0  # now minus the end of the last sealed tick
    dropped_events: dict[str, int] = field(default_factory=dict)  # reason -> count
    conservation_error_j: float = 0.0  # |measured - attributed - idle| over all sealed ticks
    measured_j: float = 0.0  # energy over all sealed ticks
    counter_resets: int = 0
    pending_requests: int = 0
    sealed_ticks: int = 0
    taps: TapReport = field(default_factory=TapReport)  # merged over the taps that report
    job_failures: dict[str, int] = field(default_factory=dict)  # periodic job -> failed runs


@dataclass(frozen=True, slots=True)
class Snapshot:
    """Everything exporters show, consistent as of ``t_s``.

    Cumulative maps are keyed by tuples of attribute values:
    ``phase_energy_j[(model, phase)]``, ``output_units[(model, unit)]``.
    """

    t_s: float
    energy_source: str
    rule: str
    devices: tuple[DeviceSnapshot, ...] = ()
    phase_energy_j: dict[tuple[str, str], float] = field(default_factory=dict)
    output_units: dict[tuple[str, str], float] = field(default_factory=dict)
    throughput_per_watt: dict[str, float] = field(default_factory=dict)  # model -> units/s/W (= units/J)
    fit: FitSnapshot = field(default_factory=FitSnapshot)
    stats: SelfStats = field(default_factory=SelfStats)


def per_unit(energy_j: float, units: float) -> float | None:
    """J per output unit; None without output, or where the quotient is not finite."""
    if not units > 0:
        return None
    value = energy_j / units
    return value if math.isfinite(value) else None
