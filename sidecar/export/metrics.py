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
    jouletrace_job_failures_total                     counter    job (tick, tap:<class>)
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
    jouletrace_model_step_time_spread                 gauge      energy_source
    jouletrace_model_floor_age_seconds                gauge      energy_source
    target_info                                       gauge      the OTel resource attributes

Histograms expose ``_bucket``/``_count``/``_sum``. The fitted-model gauges
(``jouletrace_model_*``) appear only once the fit has seen a tick
(``FitSnapshot.ticks > 0``); any per-device gauge whose value is ``None`` is skipped.
"""

from __future__ import annotations

import importlib.metadata
import threading
from collections.abc import Callable, Iterable

from opentelemetry.metrics import CallbackOptions, Observation
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from prometheus_client import CollectorRegistry, generate_latest

from sidecar.attribution.records import RequestEnergy, Snapshot
from sidecar.attribution.totals import MAX_MODELS
from sidecar.export import instruments
from sidecar.export.aggregates import SplicingReader, Streams
from sidecar.export.record_histograms import (
    ENERGY_PER_TOKEN_BUCKETS_J,
    REQUEST_ENERGY_BUCKETS_J,
    RecordHistograms,
)

__all__ = ["ENERGY_PER_TOKEN_BUCKETS_J", "REQUEST_ENERGY_BUCKETS_J", "MetricsExporter"]


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
        max_model_labels: int = MAX_MODELS,
        model: str = "",
    ) -> None:
        self._snapshot = snapshot
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
        self._histograms = RecordHistograms(
            self._streams, tenant_top_n, max_models=max_model_labels, model=model
        )
        h = self._histograms  # its streams, by name (the tests compare them to the SDK's)
        self._request_energy, self._per_token, self._per_unit = h.request_energy, h.per_token, h.per_unit
        self._tenant_energy, self._tenant_tokens = h.tenant_energy, h.tenant_tokens
        for spec in instruments.OBSERVABLES:
            make = meter.create_observable_counter if spec.counter else meter.create_observable_gauge
            make(
                spec.name,
                callbacks=[self._callback(spec.observe)],
                unit=spec.unit,
                description=spec.description,
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
        """Record final requests in the histograms (:meth:`RecordHistograms.record`); returns how many."""
        return self._histograms.record(records)

    @property
    def labels_folded(self) -> int:
        """Names and label sets beyond the caps, recorded as ``other`` (:meth:`RecordHistograms.record`)."""
        return self._histograms.labels_folded

    def shutdown(self) -> None:
        """Stop the provider and unregister the reader from the registry (idempotent)."""
        if not self._closed:
            self._closed = True
            self._provider.shutdown()
