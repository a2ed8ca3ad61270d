"""Assemble the immutable :class:`Snapshot` the exporters read, from the sidecar's parts."""

from __future__ import annotations

from typing import TYPE_CHECKING

from sidecar.attribution.records import DeviceSnapshot, FitSnapshot, SelfStats, Snapshot, TapReport
from sidecar.attribution.rules import FittedRule
from sidecar.taps.tap import merge_reports

if TYPE_CHECKING:
    from sidecar.app import Sidecar

__all__ = ["build_snapshot"]


def build_snapshot(sidecar: Sidecar, now_s: float) -> Snapshot:
    """One consistent view of device energy, attribution totals, the fit and self-stats."""
    att = sidecar.attributor
    totals = att.totals
    status = {s.device_id: s for s in sidecar.status}
    energy = sidecar.timeline.energy_j
    devices = []
    phase = sidecar.poller.phase
    for i, dev in enumerate(sidecar.meter.devices):
        st = status.get(dev.id)
        locked, phase_error_s = phase[i] if phase is not None else (None, None)
        devices.append(
            DeviceSnapshot(
                id=dev.id,
                name=dev.name,
                type=dev.type,
                energy_j=float(energy[i]),
                idle_energy_j=float(totals.idle_dev_j[i]),
                power_w=st.power_w if st else None,
                utilization=st.utilization if st else None,
                sm_clock_mhz=st.sm_clock_mhz if st else None,
                memory_used_bytes=st.memory_used_bytes if st else None,
                power_limit_w=st.power_limit_w if st else None,
                phase_locked=locked,
                phase_error_s=phase_error_s,
            )
        )
    rule = att.rule
    fit = rule.snapshot() if isinstance(rule, FittedRule) else FitSnapshot()
    sealed = att.sealed_until_s
    dropped = dict(att.dropped)
    return Snapshot(
        t_s=now_s,
        energy_source=att.energy_source,
        rule=rule.name,
        devices=tuple(devices),
        phase_energy_j=dict(totals.phase_energy_j),
        output_units=dict(totals.output_units),
        throughput_per_watt=totals.throughput_per_watt(sealed if sealed is not None else now_s),
        fit=fit,
        stats=SelfStats(
            # phase-locked devices fit the period; the timeline's edges come from all devices at once
            update_period_s=sidecar.poller.update_period_s or sidecar.timeline.update_period_s(),
            tick_lag_s=max(now_s - sealed, 0.0) if sealed is not None else 0.0,
            dropped_events=dropped,
            conservation_error_j=totals.conservation_error_j,
            measured_j=totals.measured_j,
            counter_resets=sidecar.timeline.resets + sidecar.timeline.wraps,
            pending_requests=len(att.requests),
            sealed_ticks=totals.sealed_ticks,
            taps=merge_reports([*(tap.stats() for tap in sidecar.taps), _own_report(sidecar)]),
            job_failures={"tick": sidecar.tick_failures, **sidecar.tap_failures},
        ),
    )


def _own_report(sidecar: Sidecar) -> TapReport:
    """The meter's failed, lost-device, late, stalled (several counter updates at once) and
    implausible (a gain no device makes) reads, and its gains after a counter stood still,
    the names the energy totals and the per-request series counted as ``other`` (``labels_folded``),
    the ticks that sealed past a tap's hold for the backlog (``holds_released``), the ledger's
    counters (stored, unstorable, write_errors, dropped, duplicate_kept) and the refused
    HTTP requests."""
    events = {
        ("meter", "read_errors"): sidecar.meter_errors,
        ("meter", "device_lost"): int(bool(sidecar.lost)),
        ("meter", "late_reads"): sidecar.poller.late_reads,
        ("meter", "stalled_reads"): sidecar.timeline.stalled_reads,
        ("meter", "stood_still"): sidecar.timeline.stood_still,
        ("meter", "implausible_reads"): sidecar.timeline.implausible_reads,
        ("attribution", "labels_folded"): sidecar.attributor.totals.labels_folded,
        ("attribution", "holds_released"): sidecar.holds_released,
        ("metrics", "labels_folded"): sidecar.exporter.labels_folded,
    }
    events.update({("ledger", k): n for k, n in sidecar.ledger.counts.items()})
    events.update({("http_api", k): n for k, n in sidecar.api_counts.items()})
    return TapReport(events=events)
