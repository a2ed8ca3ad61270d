"""Fixed inputs for the export tests: one snapshot of a two-GPU server and a few finished requests."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from sidecar.attribution.record_batch import REQUEST_ID, Values, to_json
from sidecar.attribution.records import (
    DeviceSnapshot,
    FitSnapshot,
    RequestEnergy,
    SelfStats,
    Snapshot,
    TapReport,
)
from sidecar.export.ledger_json import json_text

LLM = "meta-llama/Llama-3.1-8B-Instruct"
IMAGE = "black-forest-labs/FLUX.1-dev"
VIDEO = "Wan-AI/Wan2.1-T2V-14B"


def make_record(**overrides: Any) -> RequestEnergy:
    """A final chat request: 12.5 J for 250 output tokens (0.05 J/token), measured."""
    base = RequestEnergy(
        request_id="req-0001",
        model=LLM,
        operation="chat",
        task="chat",
        unit="token",
        energy_j=12.5,
        phase_j={"prefill": 2.5, "decode": 10.0},
        component_j={"static": 4.0, "step": 3.0, "prefill": 1.5, "decode": 3.5, "context": 0.5},
        prompt_tokens=800,
        output_tokens=250,
        output_units=250.0,
        start_s=100.0,
        end_s=104.0,
        end_unix_s=1_780_000_004.0,
        busy_s=4.0,
        approximate=False,
        final=True,
        rule="fitted",
        energy_source="measured",
        attributes={"trace_id": "4bf92f3577b34da6a3ce929d0e0e4736"},
    )
    return replace(base, **overrides)


def golden_records() -> list[RequestEnergy]:
    """Requests covering each histogram path (the non-final and zero-output ones must not add J/token)."""
    return [
        make_record(),
        make_record(request_id="req-0002", energy_j=40.0, output_tokens=100, output_units=100.0, task="code"),
        make_record(request_id="req-0003", energy_j=3.0, output_tokens=0, output_units=0.0),
        make_record(request_id="req-0004", final=False, energy_j=99.0),
        make_record(
            request_id="req-0005",
            model=IMAGE,
            operation="image_generation",
            task="text-to-image",
            unit="image",
            energy_j=900.0,
            output_tokens=0,
            output_units=1.0,
        ),
        make_record(
            request_id="req-0006",
            model=VIDEO,
            operation="video_generation",
            task="text-to-video",
            unit="video",
            energy_j=1.16e6,
            output_tokens=0,
            output_units=1.0,
            attributes={"video_frames": "81", "video_fps": "16"},
        ),
    ]


def golden_snapshot(energy_source: str = "measured", fit_ticks: int = 120) -> Snapshot:
    """Two GPUs (the second reports no power or clock), three models, a fitted model, some self-stats."""
    return Snapshot(
        t_s=1234.5,
        energy_source=energy_source,
        rule="fitted",
        devices=(
            DeviceSnapshot(
                id="GPU-8f4c2a1e-0000-4000-8000-000000000000",
                name="NVIDIA H100 80GB HBM3",
                type="gpu",
                energy_j=152_000.25,
                idle_energy_j=20_000.0,
                power_w=412.5,
                utilization=0.87,
                sm_clock_mhz=1980.0,
                memory_used_bytes=64_000_000_000.0,
                power_limit_w=700.0,
                phase_locked=True,
                phase_error_s=0.00025,
            ),
            DeviceSnapshot(
                id="GPU-8f4c2a1e-0000-4000-8000-000000000001",
                name="NVIDIA H100 80GB HBM3",
                type="gpu",
                energy_j=148_500.0,
                idle_energy_j=21_000.0,
                utilization=0.85,
                memory_used_bytes=63_500_000_000.0,
                power_limit_w=700.0,
                phase_locked=False,  # searching: no phase error
            ),
        ),
        phase_energy_j={
            (LLM, "prefill"): 41_000.0,
            (LLM, "decode"): 170_000.5,
            (LLM, "idle"): 41_000.0,
            (IMAGE, "denoise"): 48_499.75,
        },
        output_units={(LLM, "token"): 1_250_000.0, (IMAGE, "image"): 52.0},
        throughput_per_watt={LLM: 6.25, IMAGE: 0.002},
        fit=FitSnapshot(
            static_w=95.0,
            busy_w=180.0,
            j_per_step=0.35,
            j_per_prefill_token=0.0004,
            j_per_decode_token=0.012,
            j_per_context_token=2.5e-6,
            j_per_denoise_unit=0.0,
            r2=0.97,
            ticks=fit_ticks,
            condition=42.0,
            ok=True,
            floor_source="measured",
            floor_age_s=12.5,
            floor_stale=False,
            step_time_spread=0.06,
        ),
        stats=SelfStats(
            update_period_s=0.1,
            tick_lag_s=0.25,
            dropped_events={"unknown_request": 3},
            job_failures={"tick": 2},
            conservation_error_j=1e-9,
            measured_j=300_500.25,
            counter_resets=1,
            pending_requests=4,
            sealed_ticks=12_000,
            taps=TapReport(
                events={
                    ("vllm_plugin", "iterations"): 5000,
                    ("vllm_plugin", "lost"): 2,
                    ("otlp", "ignored"): 7,
                },
                token_mismatch={"prefill": 0.0, "decode": 2.0},
                server={"running": 12.0, "waiting": 3.0, "kv_cache_usage": 0.42},
            ),
        ),
    )


def schema_1_row(values: Values, seq: int, now: float) -> tuple[Any, ...]:
    """A record's row as the ledger wrote it in schema 1 (:data:`ledger_migrate.SCHEMA_1`): the main
    numbers as columns and the whole record as JSON."""
    rec = to_json(values)
    text = json_text(rec)
    columns = ("end_unix_s", "model", "operation", "task", "unit", "energy_j", "joules_per_output_unit")
    columns += ("prompt_tokens", "output_tokens", "output_units", "busy_s")
    tail = (int(rec["approximate"]), rec["rule"], rec["energy_source"], text)
    return (values[REQUEST_ID], seq, now, *(rec[name] for name in columns), *tail)
