"""The *Sidecar health* row of the Overview: is the sidecar keeping up, and does its accounting hold.

Timing (attribution lag, the energy counter's update period, requests not final yet) and
faults (conservation error, dropped work events, counter resets, the counter's phase lock), per pod.
"""

from __future__ import annotations

from dashboards.panels import HW, RATE, PanelBuilder, Query, timeseries

__all__ = ["panels"]


def panels() -> list[PanelBuilder]:
    """The row's panels, timing first."""
    return _timing() + _faults()


def _timing() -> list[PanelBuilder]:
    return [
        timeseries(
            "Attribution lag",
            "Now minus the end of the last sealed attribution tick. Alert: JouletraceAttributionLagHigh.",
            "s",
            [Query(f"max by (pod) (jouletrace_attribution_lag_seconds{{{HW}}})", "{{pod}}")],
            width=8,
            fill=0,
        ),
        timeseries(
            "Energy-counter update period",
            "Measured update period of the GPU energy counter (about 0.1 s on NVML); requests shorter "
            "than this are flagged approximate.",
            "s",
            [Query(f"max by (pod) (jouletrace_meter_update_period_seconds{{{HW}}})", "{{pod}}")],
            width=8,
            fill=0,
        ),
        timeseries(
            "Requests pending",
            "Requests whose energy is not final yet (waiting for the timeline to cover their end).",
            "short",
            [Query(f"sum by (pod) (jouletrace_requests_pending{{{HW}}})", "{{pod}}")],
            width=8,
            fill=0,
        ),
    ]


def _faults() -> list[PanelBuilder]:
    return [
        timeseries(
            "Conservation error",
            "|measured - attributed - idle| over all sealed ticks; should stay near 0 J.",
            "joule",
            [
                Query(
                    f"max by (pod, energy_source) (jouletrace_conservation_error_joules{{{HW}}})",
                    "{{pod}} ({{energy_source}})",
                )
            ],
            width=8,
            fill=0,
        ),
        timeseries(
            "Dropped work events, counter resets, late reads",
            "Work events dropped per second, per reason; energy-counter resets or wraps handled; "
            "counter reads per second that ran three poll periods or more late (the poll thread "
            "waited for a core: coarser ticks; alert JouletraceMeterReadsLate). "
            "A dropped-events series exists only after the first drop, so the query falls back "
            "to 0 per pod: a flat 0 means 'none', no data means the sidecar is not scraped.",
            "short",
            [
                Query(
                    f"sum by (pod, reason) (rate(jouletrace_events_dropped_total{{{HW}}}[{RATE}]))\n"
                    f"or sum by (pod) (jouletrace_attribution_lag_seconds{{{HW}}}) * 0",
                    "dropped {{pod}} {{reason}}",
                ),
                Query(
                    f"sum by (pod) (increase(jouletrace_meter_resets_total{{{HW}}}[{RATE}]))",
                    "resets {{pod}}",
                ),
                Query(
                    f'sum by (pod) (rate(jouletrace_tap_events_total{{{HW}, jouletrace_tap="meter", '
                    f'outcome="late_reads"}}[{RATE}]))',
                    "late reads {{pod}}",
                ),
            ],
            width=12,
            fill=0,
        ),
        timeseries(
            "Energy-counter phase error",
            "Per GPU: how well the reads are locked to the counter's update grid (NVML with "
            "poll_schedule=phase-lock); updates are dated within about this. A GPU whose lock is lost "
            "has no value (jouletrace_meter_phase_locked = 0: read on the fixed poll period until it "
            "locks again).",
            "s",
            [
                Query(
                    f"max by (pod, hw_id) (jouletrace_meter_phase_error_seconds{{{HW}}})",
                    "{{pod}} {{hw_id}}",
                )
            ],
            width=12,
            fill=0,
        ),
    ]
