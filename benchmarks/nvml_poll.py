"""The few NVML calls ``nvml_record.py`` makes per poll, and what one read costs.

Units: seconds, joules (mJ / 1000), watts (mW / 1000), MHz, bytes, 0..1 utilization.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable
from typing import Any

from nvml_trace import FI_POWER_AVERAGE, FI_POWER_INSTANT, Row, dist


def _s(x: Any) -> str:
    return x.decode() if isinstance(x, bytes) else str(x)


def _field_w(fv: Any) -> float | None:
    """A power field value (mW) in W, or None where NVML returned an error for it."""
    if fv.nvmlReturn != 0:
        return None
    vt = int(fv.valueType)
    v = {0: "dVal", 1: "uiVal", 2: "ulVal", 3: "ullVal", 4: "sllVal", 5: "siVal", 6: "usVal"}[vt]
    return float(getattr(fv.value, v)) / 1000.0


def device_info(nvml: Any, h: Any) -> dict[str, Any]:
    def tryget(fn: Callable[[], Any]) -> Any:
        try:
            return fn()
        except Exception as e:  # an unsupported query must not stop the recording
            return f"unavailable: {e}"

    cuda = tryget(nvml.nvmlSystemGetCudaDriverVersion)
    return {
        "gpu": _s(nvml.nvmlDeviceGetName(h)),
        "uuid": _s(nvml.nvmlDeviceGetUUID(h)),
        "driver": _s(nvml.nvmlSystemGetDriverVersion()),
        "nvml": _s(tryget(nvml.nvmlSystemGetNVMLVersion)),
        "cuda_driver": f"{cuda // 1000}.{cuda % 1000 // 10}" if isinstance(cuda, int) else cuda,
        "power_limit_w": tryget(lambda: nvml.nvmlDeviceGetEnforcedPowerLimit(h) / 1000.0),
    }


CALLS = ("energy", "fields", "power_usage", "utilization", "sm_clock", "memory")


def make_poller(nvml: Any, h: Any, use_fields: bool) -> Callable[[], tuple[Row, dict[str, float]]]:
    """One poll: every NVML read with its own cost; returns (row, costs_s).

    The energy read comes first (its midpoint is the row's time). A secondary read that fails
    once when probed here is left out (its column empty) rather than stopping the recording.
    """
    mono = time.monotonic
    fields = [FI_POWER_INSTANT, FI_POWER_AVERAGE]
    reads: dict[str, Callable[[], Any]] = {
        "power_usage": lambda: nvml.nvmlDeviceGetPowerUsage(h) / 1000.0,
        "utilization": lambda: nvml.nvmlDeviceGetUtilizationRates(h).gpu / 100.0,
        "sm_clock": lambda: nvml.nvmlDeviceGetClockInfo(h, nvml.NVML_CLOCK_SM),
        "memory": lambda: nvml.nvmlDeviceGetMemoryInfo(h).used,
    }
    for name, fn in list(reads.items()):
        try:
            fn()
        except Exception as e:
            print(f"warning: {name} read unavailable ({e}); its column stays empty", flush=True)
            del reads[name]

    def poll() -> tuple[Row, dict[str, float]]:
        c: dict[str, float] = {}
        v: dict[str, Any] = {}
        t0 = mono()
        e_mj = nvml.nvmlDeviceGetTotalEnergyConsumption(h)
        t1 = mono()
        c["energy"] = t1 - t0
        inst = avg_field = inst_ts = None
        if use_fields:
            fv = nvml.nvmlDeviceGetFieldValues(h, fields)
            t2 = mono()
            c["fields"] = t2 - t1
            t1 = t2
            inst, avg_field = _field_w(fv[0]), _field_w(fv[1])
            inst_ts = int(fv[0].timestamp) if fv[0].nvmlReturn == 0 else None
        for name, fn in reads.items():
            v[name] = fn()
            t2 = mono()
            c[name] = t2 - t1
            t1 = t2
        c["poll"] = t1 - t0
        pu = v.get("power_usage")
        row: Row = {
            "t_s": t0 + c["energy"] / 2.0,  # the energy read's midpoint
            "energy_j": e_mj / 1000.0,
            "power_w": inst if inst is not None else pu,
            "power_avg_w": pu,
            "power_avg_field_w": avg_field,
            "inst_ts_us": inst_ts,
            "utilization": v.get("utilization"),
            "sm_clock_mhz": v.get("sm_clock"),
            "memory_used_bytes": v.get("memory"),
            "poll_cost_s": c["poll"],
        }
        return row, c

    return poll


def probe_fields(nvml: Any, h: Any) -> dict[str, Any]:
    """Which power fields this GPU/driver supports."""
    out: dict[str, Any] = {}
    try:
        fv = nvml.nvmlDeviceGetFieldValues(h, [FI_POWER_INSTANT, FI_POWER_AVERAGE])
        out["instant_supported"] = fv[0].nvmlReturn == 0
        out["average_field_supported"] = fv[1].nvmlReturn == 0
        out["instant_probe_w"] = _field_w(fv[0])
        out["average_field_probe_w"] = _field_w(fv[1])
    except Exception as e:
        out["instant_supported"] = out["average_field_supported"] = False
        out["error"] = str(e)
    return out


def read_cost(nvml: Any, h: Any, seconds: float = 3.0) -> dict[str, Any]:
    """Wall and CPU (thread) time of single NVML reads, each read alone, at 20 ms and back-to-back.

    Run on an idle GPU, no load process. Tells whether a read blocks (wall >> CPU) or burns CPU,
    and whether the energy read's cost depends on how often it is called.
    """
    reads: dict[str, Callable[[], Any]] = {
        "energy": lambda: nvml.nvmlDeviceGetTotalEnergyConsumption(h),
        "fields": lambda: nvml.nvmlDeviceGetFieldValues(h, [FI_POWER_INSTANT]),
        "power_usage": lambda: nvml.nvmlDeviceGetPowerUsage(h),
    }
    out: dict[str, Any] = {}
    for name, fn in reads.items():
        for period in (0.020, 0.0):
            wall, cpu, vals, ts = [], [], [], []
            end = time.monotonic() + seconds
            nxt = time.monotonic()
            while time.monotonic() < end:
                if period:
                    nxt += period
                    time.sleep(max(0.0, nxt - time.monotonic()))
                c0, w0 = time.thread_time(), time.monotonic()
                v = fn()
                w1, c1 = time.monotonic(), time.thread_time()
                wall.append(w1 - w0)
                cpu.append(c1 - c0)
                if name == "energy":
                    vals.append(v)
                    ts.append((w0 + w1) / 2)
            key = f"{name}_{'20ms' if period else 'back_to_back'}"
            out[key] = {"wall": dist(wall, 1e3, "ms"), "cpu": dist(cpu, 1e3, "ms")}
            if vals:
                ch = [ts[i] for i in range(1, len(vals)) if vals[i] != vals[i - 1]]
                out[key]["update_period_ms"] = dist([b - a for a, b in itertools.pairwise(ch)], 1e3, "ms")
                edge = {i for i in range(1, len(vals)) if vals[i] != vals[i - 1]}
                out[key]["wall_at_update"] = dist([wall[i] for i in edge], 1e3, "ms")
                out[key]["wall_between_updates"] = dist(
                    [w for i, w in enumerate(wall) if i not in edge], 1e3, "ms"
                )
    return out
