"""A stand-in for pynvml for ``nvml_record.py --dry-run``: no GPU needed."""

from __future__ import annotations

import math
import time
import types
from collections.abc import Sequence
from typing import Any

from nvml_trace import FI_POWER_AVERAGE, FI_POWER_INSTANT


class FakeNvml:
    """Just enough of pynvml for ``--dry-run``: a 100 ms energy counter, power from the load flag."""

    NVML_CLOCK_SM = 1
    NVML_FI_DEV_POWER_AVERAGE = FI_POWER_AVERAGE
    NVML_FI_DEV_POWER_INSTANT = FI_POWER_INSTANT

    class NVMLError(Exception):
        pass

    def __init__(self, on_flag: Any) -> None:
        self.on_flag = on_flag
        self.t_last = time.monotonic()
        self.energy_mj = 123_456_789.0
        self.shown_mj = int(self.energy_mj)
        self.next_update = self.t_last + 0.1

    def _power_w(self) -> float:
        size = self.on_flag.value
        return 70.0 if size == 0 else 70.0 + 600.0 * min(1.0, size / 8192)

    def _advance(self) -> None:
        now = time.monotonic()
        self.energy_mj += self._power_w() * (now - self.t_last) * 1000.0
        self.t_last = now
        if now >= self.next_update:
            self.shown_mj = int(self.energy_mj)
            self.next_update += 0.1 * math.ceil((now - self.next_update) / 0.1 + 1e-9)

    def nvmlInit(self) -> None: ...
    def nvmlShutdown(self) -> None: ...
    def nvmlDeviceGetHandleByIndex(self, i: int) -> int:
        return i

    def nvmlDeviceGetName(self, h: int) -> str:
        return "Fake GPU X100"

    def nvmlDeviceGetUUID(self, h: int) -> str:
        return "GPU-00000000-1111-2222-3333-444444444444"

    def nvmlSystemGetDriverVersion(self) -> str:
        return "0.0.fake"

    def nvmlSystemGetNVMLVersion(self) -> str:
        return "0.0.fake"

    def nvmlSystemGetCudaDriverVersion(self) -> int:
        return 13000

    def nvmlDeviceGetEnforcedPowerLimit(self, h: int) -> int:
        return 700_000

    def nvmlDeviceGetTotalEnergyConsumption(self, h: int) -> int:
        self._advance()
        return self.shown_mj

    def nvmlDeviceGetPowerUsage(self, h: int) -> int:
        return int(self._power_w() * 1000 * 0.9)

    def nvmlDeviceGetFieldValues(self, h: int, ids: Sequence[int]) -> list[Any]:
        mw = int(self._power_w() * 1000)
        out = []
        for _fid in ids:
            v = types.SimpleNamespace(
                nvmlReturn=0,
                valueType=1,
                timestamp=int(time.time() * 1e6),
                value=types.SimpleNamespace(uiVal=mw),
            )
            out.append(v)
        return out

    def nvmlDeviceGetUtilizationRates(self, h: int) -> Any:
        class U:
            gpu = 100 if self.on_flag.value else 0
            memory = 0

        return U()

    def nvmlDeviceGetClockInfo(self, h: int, clk: int) -> int:
        return 1980 if self.on_flag.value else 345

    def nvmlDeviceGetMemoryInfo(self, h: int) -> Any:
        class M:
            used = 2_000_000_000
            total = 80_000_000_000
            free = total - used

        return M()
