"""OpenTelemetry metrics for jouletrace, exposed as Prometheus text from our own registry.

One :class:`MetricsExporter` owns an OTel ``MeterProvider`` whose only reader is a
``PrometheusMetricReader`` registered in the exporter's own
``prometheus_client.CollectorRegistry`` (never the global ``REGISTRY``), so each
exporter, and each test, starts empty. Observable instruments read the latest
:class:`~sidecar.attribution.records.Snapshot` in their callbacks; :meth:`render`
pins one snapshot for the whole scrape, so every number on a page agrees.
Finished :class:`~sidecar.attribution.records.RequestEnergy` records go into
histograms through :meth:`record`. A request id is never a label: views keep only
the listed attribute keys.

``energy.source`` (``measured``, ``estimate``, ``simulated``, ``replay``,
``integrated``) labels every series that carries joules or watts, so an estimate
is never mistaken for a measurement.

Prometheus names (verified with opentelemetry-exporter-prometheus 0.66b2 and
prometheus-client 0.26 by the golden test, tests/sidecar/export/golden_metrics.txt)::

    name                                              type       labels (besides the otel_scope_* ones)
    hw_energy_joules_total                            counter    hw_id, hw_type, hw_name, energy_source
    hw_power_watts                                    gauge      hw_id, hw_type, hw_name, energy_source
    hw_gpu_utilization                                gauge      same (a ratio 0..1)
    hw_gpu_memory_usage_bytes                         gauge      same
    jouletrace_gpu_sm_clock_hertz                     gauge      same
    jouletrace_gpu_power_limit_watts                  gauge      same
    jouletrace_meter_phase_locked                     gauge      same (1 locked, 0 searching; NVML only)
    jouletrace_meter_phase_error_seconds              gauge      same (NVML only, while locked)
    gen_ai_server_energy_joules_total                 counter    gen_ai_request_model, jouletrace_phase,
                                                                 energy_source
    gen_ai_server_request_energy_joules               histogram  gen_ai_request_model, gen_ai_operation_name,
                                                                 jouletrace_task, energy_source
    gen_ai_server_energy_per_output_token_joules      histogram  gen_ai_request_model, jouletrace_task,
                                                                 energy_source
    gen_ai_server_energy_per_output_unit_joules       histogram  gen_ai_request_model, jouletrace_task,
                                                                 jouletrace_unit (image|video|frame|
                                                                 video_second), energy_source
    gen_ai_server_output_units_total                  counter    gen_ai_request_model, jouletrace_unit
    gen_ai_server_tenant_energy_joules_total          counter    gen_ai_request_model, jouletrace_tenant
                                                                 (top-N, other, none), energy_source
    gen_ai_server_tenant_output_tokens_total          counter    gen_ai_request_model, jouletrace_tenant
    gen_ai_server_throughput_per_watt         gauge      gen_ai_request_model, energy_source
    jouletrace_meter_update_period_seconds            gauge      -
    jouletrace_attribution_lag_seconds                gauge      -
    jouletrace_events_dropped_total                   counter    reason
    jouletrace_job_failures_total                     counter    job (tick)
    jouletrace_conservation_error_joules              gauge      energy_source
    jouletrace_meter_resets_total                   counter    -
    jouletrace_requests_pending                       gauge      -
    jouletrace_tap_events_total                       counter    jouletrace_tap, outcome
    jouletrace_tap_token_mismatch                     gauge      jouletrace_phase (prefill|decode)
    jouletrace_server_state                           gauge      jouletrace_quantity (running|waiting|
                                                                 kv_cache_usage)
    jouletrace_model_static_power_watts               gauge      energy_source
    jouletrace_model_busy_power_watts                 gauge      energy_source
    jouletrace_model_energy_per_step_joules           gauge      energy_source
    jouletrace_model_energy_per_token_joules          gauge      jouletrace_phase (prefill|decode),
                                                                 energy_source
    jouletrace_model_energy_per_context_token_joules  gauge      energy_source
    jouletrace_model_energy_per_denoise_unit_joules   gauge      energy_source
    jouletrace_model_fit_r2                           gauge      energy_source
    jouletrace_model_fit_condition                    gauge      energy_source
    jouletrace_model_fit_ok                           gauge      energy_source
    jouletrace_model_floor_age_seconds                gauge      energy_source
    target_info                                       gauge      the OTel resource attributes

Histograms expose ``_bucket``/``_count``/``_sum``. The fitted-model gauges
(``jouletrace_model_*``) appear only once the fit has seen a tick
(``FitSnapshot.ticks > 0``); any per-device gauge whose value is ``None`` is skipped.
"""

from __future__ import annotations

import importlib.metadata
import math
import threading
from collections.abc import Callable, Iterable

from opentelemetry.metrics import CallbackOptions, Observation
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from prometheus_client import CollectorRegistry, generate_latest

from sidecar.attribution.record_batch import (
    ATTRIBUTES,
    ENERGY_J,
    ENERGY_SOURCE,
    FINAL,
    MODEL,
    OPERATION,
    OUTPUT_TOKENS,
    OUTPUT_UNITS,
    TASK,
    UNIT,
    RecordBatch,
    Values,
)
from sidecar.attribution.records import RequestEnergy, Snapshot
from sidecar.contracts.span_attributes import TENANT
from sidecar.export import instruments
from sidecar.export.aggregates import Key, SplicingReader, Stream, Streams
from sidecar.export.tenants import TenantLabels

__all__ = ["ENERGY_PER_TOKEN_BUCKETS_J", "REQUEST_ENERGY_BUCKETS_J", "MetricsExporter"]


def _one_two_five(low: float, high: float) -> tuple[float, ...]:
    """1-2-5 log-spaced bucket boundaries from ``low`` to ``high`` inclusive."""
    out: list[float] = []
    decade = low
    while decade <= high * (1 + 1e-9):
        for mantissa in (1.0, 2.0, 5.0):
            value = float(f"{decade * mantissa:.6g}")
            if value <= high * (1 + 1e-9):
                out.append(value)
        decade *= 10
    return tuple(out)


# 10 mJ (a tiny CPU request) to 2 MJ (above the study's largest video request, ~1.16 MJ).
REQUEST_ENERGY_BUCKETS_J: tuple[float, ...] = _one_two_five(0.01, 2e6)
# 0.1 mJ to 10 J per output token.
ENERGY_PER_TOKEN_BUCKETS_J: tuple[float, ...] = _one_two_five(1e-4, 10.0)

# the attributes of each per-request series, in the order their values are given
_REQUEST_KEYS = ("gen_ai.request.model", "gen_ai.operation.name", "jouletrace.task", "energy.source")
_PER_TOKEN_KEYS = ("gen_ai.request.model", "jouletrace.task", "energy.source")
_PER_UNIT_KEYS = (*_PER_TOKEN_KEYS, "jouletrace.unit")
_TENANT_ENERGY_KEYS = ("gen_ai.request.model", "jouletrace.tenant", "energy.source")
_TENANT_TOKEN_KEYS = ("gen_ai.request.model", "jouletrace.tenant")
Batch = dict[Stream, dict[Key, list[float]]]


def _add(batch: Batch, stream: Stream, key: Key, value: float) -> None:
    """One value for ``stream``'s series ``key`` (streams and series kept in first-use order)."""
    groups = batch.get(stream)
    if groups is None:
        groups = batch[stream] = {}
    values = groups.get(key)
    if values is None:
        groups[key] = [value]
    else:
        values.append(value)


def _float(text: str | None) -> float:
    """A record attribute as a finite number, 0.0 if absent or not a number."""
    try:
        value = float(text) if text is not None else 0.0
    except ValueError:
        return 0.0
    return value if math.isfinite(value) else 0.0


def _scope_version() -> str:
    try:
        return importlib.metadata.version("jouletrace")
    except importlib.metadata.PackageNotFoundError:
        return ""


class MetricsExporter:
    """Owns the OTel meter provider, its Prometheus reader and a private registry.

    ``snapshot`` returns the latest immutable snapshot; it is called once per
    :meth:`render` (and once per callback when something else collects the
    registry). ``resource`` defaults to ``Resource.create`` with
    ``service.name=jouletrace-sidecar`` (merged with ``OTEL_RESOURCE_ATTRIBUTES``).
    """

    def __init__(
        self,
        snapshot: Callable[[], Snapshot],
        *,
        resource: Resource | None = None,
        registry: CollectorRegistry | None = None,
        tenant_top_n: int = 10,
    ) -> None:
        self._snapshot = snapshot
        self._tenants = TenantLabels(tenant_top_n)
        self._pinned: Snapshot | None = None
        self._render_lock = threading.Lock()
        self._closed = False
        self.registry = registry if registry is not None else CollectorRegistry()
        self._reader = SplicingReader(registry=self.registry)
        resource = (
            resource if resource is not None else Resource.create({"service.name": "jouletrace-sidecar"})
        )
        self._provider = MeterProvider(metric_readers=[self._reader], resource=resource)
        version = _scope_version()
        meter = self._provider.get_meter("jouletrace", version)
        self._streams = Streams(InstrumentationScope("jouletrace", version), resource)
        self._reader.streams = self._streams
        self._create_histograms(self._streams)
        self._create_tenant_counters(self._streams)
        for spec in instruments.OBSERVABLES:
            make = meter.create_observable_counter if spec.counter else meter.create_observable_gauge
            make(
                spec.name,
                callbacks=[self._callback(spec.observe)],
                unit=spec.unit,
                description=spec.description,
            )

    def _create_histograms(self, streams: Streams) -> None:
        """Per finished request: its energy, J per output token, J per diffusion output unit."""
        self._request_energy = streams.stream(
            instruments.REQUEST_ENERGY,
            "J",
            "Energy attributed to each finished request, in joules (J).",
            _REQUEST_KEYS,
            REQUEST_ENERGY_BUCKETS_J,
        )
        self._per_token = streams.stream(
            instruments.ENERGY_PER_OUTPUT_TOKEN,
            "J",
            "joules per output token: a finished LLM request's energy (J) / its output tokens.",
            _PER_TOKEN_KEYS,
            ENERGY_PER_TOKEN_BUCKETS_J,
        )
        self._per_unit = streams.stream(
            instruments.ENERGY_PER_OUTPUT_UNIT,
            "J",
            "joules per image, video, frame or video second (jouletrace.unit) of a finished "
            "diffusion request: its energy (J) / its output in that unit.",
            _PER_UNIT_KEYS,
            REQUEST_ENERGY_BUCKETS_J,
        )

    def _create_tenant_counters(self, streams: Streams) -> None:
        """Energy and output tokens of finished requests, per tenant."""
        self._tenant_energy = streams.stream(
            instruments.TENANT_ENERGY,
            "J",
            "Energy of finished requests per tenant (top-N by energy, then other), in joules.",
            _TENANT_ENERGY_KEYS,
        )
        self._tenant_tokens = streams.stream(
            instruments.TENANT_OUTPUT_TOKENS,
            "{token}",
            "Output tokens of finished requests per tenant (same tenant labels as the energy).",
            _TENANT_TOKEN_KEYS,
        )

    def _current(self) -> Snapshot:
        pinned = self._pinned
        return pinned if pinned is not None else self._snapshot()

    def _callback(
        self, observe: Callable[[Snapshot], Iterable[tuple[float, dict[str, str]]]]
    ) -> Callable[[CallbackOptions], Iterable[Observation]]:
        def callback(options: CallbackOptions) -> Iterable[Observation]:
            return [Observation(value, attrs) for value, attrs in observe(self._current())]

        return callback

    def render(self) -> bytes:
        """The Prometheus text exposition of every instrument, from one snapshot."""
        with self._render_lock:
            self._pinned = self._snapshot()
            try:
                return generate_latest(self.registry)
            finally:
                self._pinned = None

    def record(self, records: Iterable[RequestEnergy]) -> int:
        """Record final requests in the histograms; returns how many were recorded.

        Records with ``final=False`` are skipped (they are still growing), as are
        non-finite or negative energies and records whose energy is unknown (attribute
        ``energy_unknown``: their work was lost; the attributor counts them). Record each
        final request once.
        J/token is recorded only for ``unit == "token"`` with output tokens > 0; J/image,
        J/video, J/frame and J/video-second (``video_frames``/``video_fps`` attributes) for
        ``unit`` image or video with output units > 0. The whole batch is added at once
        (:mod:`.aggregates`), with the counts and sums recording each value would give; a
        :class:`~sidecar.attribution.record_batch.RecordBatch` is read as its rows of values.
        """
        batch: Batch = {}
        recorded = 0
        for rec in RecordBatch.of(records).values:
            energy_j = rec[ENERGY_J]
            if not rec[FINAL] or not math.isfinite(energy_j) or energy_j < 0:
                continue
            attributes = rec[ATTRIBUTES]
            if attributes.get("energy_unknown") == "true":
                continue
            model, task, source, unit = rec[MODEL], rec[TASK], rec[ENERGY_SOURCE], rec[UNIT]
            _add(batch, self._request_energy, (model, rec[OPERATION], task, source), energy_j)
            output_tokens = rec[OUTPUT_TOKENS]
            if unit == "token" and output_tokens > 0:
                _add(batch, self._per_token, (model, task, source), energy_j / output_tokens)
                tenant = self._tenants.label(attributes.get(TENANT), energy_j)
                _add(batch, self._tenant_energy, (model, tenant, source), energy_j)
                _add(batch, self._tenant_tokens, (model, tenant), output_tokens)
            elif unit in ("image", "video") and rec[OUTPUT_UNITS] > 0:
                self._record_per_unit(batch, rec, (model, task, source))
            recorded += 1
        self._streams.add(batch)
        return recorded

    def _record_per_unit(self, batch: Batch, rec: Values, key: Key) -> None:
        """J per image or video; for videos also J per frame and J per second of video.

        A value that overflows (a hostile tiny output or frame count) is left out, as the SDK's
        ``Histogram.record`` leaves out a non-finite one."""
        unit, output_units, attributes = rec[UNIT], rec[OUTPUT_UNITS], rec[ATTRIBUTES]
        per_unit = [(unit, output_units)]
        frames = _float(attributes.get("video_frames")) if unit == "video" else 0.0
        if frames > 0:
            all_frames = frames * output_units
            per_unit.append(("frame", all_frames))
            fps = _float(attributes.get("video_fps"))
            if fps > 0:
                per_unit.append(("video_second", all_frames / fps))
        for name, amount in per_unit:
            value = rec[ENERGY_J] / amount if amount > 0 else math.inf
            if math.isfinite(value):
                _add(batch, self._per_unit, (*key, name), value)

    def shutdown(self) -> None:
        """Stop the provider and unregister the reader from the registry (idempotent)."""
        if not self._closed:
            self._closed = True
            self._provider.shutdown()
