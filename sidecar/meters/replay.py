"""The replay meter: plays a recorded trace file back, deterministically.

For tests, demos and re-analysing a recorded run. The format (CSV, v1)::

    # jouletrace replay trace v1
    # gpu: NVIDIA H200; driver: 570.124.06        (any line starting with # is a comment)
    t_s,device,energy_j,power_w,utilization,sm_clock_mhz,memory_used_bytes,power_avg_w,phase,poll_cost_s
    0.000000,GPU-1234,123456.789,75.20,0.00,345,1234567,74.9,idle,0.000412

Required columns: ``t_s`` (s, any origin), ``device`` (id), ``energy_j`` (the
cumulative counter as read, J). Optional: ``power_w`` (W), ``utilization``
(0..1), ``sm_clock_mhz``, ``memory_used_bytes``, ``power_limit_w`` (W). Other
columns are ignored; an empty cell is unknown. Rows are sorted by ``t_s``;
rows with equal ``t_s`` (different devices) are one poll. Devices are the
unique ids in order of first appearance. A device missing from a poll keeps
its last value (before its first row: its first value, i.e. no energy).

Playback: trace time = first ``t_s`` + (clock() - clock at construction) x
``speed``. ``read()`` returns the latest poll at or before that trace time,
its ``t_s`` mapped back onto the sidecar clock; ``status()`` the same poll's
status. ``readings()`` iterates every poll with the file's own ``t_s``.
"""

from __future__ import annotations

import csv
import math
import time
from array import array
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from sidecar.errors import ConfigError, ReplayFormatError
from sidecar.meters.base import MAX_DEVICE_W, DeviceInfo, DeviceStatus, EnergySource, Reading

__all__ = ["OPTIONAL_COLUMNS", "REQUIRED_COLUMNS", "ReplayMeter"]

REQUIRED_COLUMNS = ("t_s", "device", "energy_j")
OPTIONAL_COLUMNS = ("power_w", "utilization", "sm_clock_mhz", "memory_used_bytes", "power_limit_w")
_MAGIC = "jouletrace replay trace v"
_EPS_S = 1e-9  # trace-time slack: rows are written with µs precision; float playback may be 1 ulp short


@dataclass(slots=True)
class _Columns:
    """The data rows in file order, as columns (8 bytes a value: a long trace stays small)."""

    ids: list[str] = field(default_factory=list)  # devices in order of first appearance
    t_s: array[float] = field(default_factory=lambda: array("d"))
    device: array[int] = field(default_factory=lambda: array("q"))  # index into ids
    energy_j: array[float] = field(default_factory=lambda: array("d"))
    status: array[float] = field(default_factory=lambda: array("d"))  # OPTIONAL_COLUMNS per row; NaN: unknown


class ReplayMeter:
    """Energy (J) and status from a recorded v1 trace, played on the injected clock."""

    def __init__(
        self,
        path: Path | str,
        *,
        clock: Callable[[], float] = time.monotonic,
        speed: float = 1.0,
    ) -> None:
        if not (math.isfinite(speed) and speed > 0):
            raise ConfigError(f"replay_speed: {speed} must be a finite number > 0")
        self._path = Path(path)
        self._clock = clock
        self._speed = float(speed)
        self._comments, columns = _parse(self._path)
        self._ids = tuple(columns.ids)
        self._devices = tuple(DeviceInfo(d, d, "gpu", None, MAX_DEVICE_W * speed) for d in self._ids)
        # per poll: trace time (s), energy per device (J), status per device (OPTIONAL_COLUMNS; NaN unknown)
        self._times, self._energy, self._status = _assemble(columns)
        self._first_t = float(self._times[0])
        self._t0 = clock()

    # -- EnergyMeter ---------------------------------------------------------

    @property
    def source(self) -> EnergySource:
        """Always REPLAY."""
        return EnergySource.REPLAY

    @property
    def devices(self) -> tuple[DeviceInfo, ...]:
        """The trace's devices in order of first appearance (name = id; type gpu)."""
        return self._devices

    def read(self) -> Reading:
        """The latest poll at or before the current trace time; ``t_s`` on the sidecar clock (s)."""
        i = self._index()
        t_s = self._t0 + (float(self._times[i]) - self._first_t) / self._speed
        return Reading(t_s=t_s, energy_j=tuple(self._energy[i].tolist()))

    def status(self) -> tuple[DeviceStatus, ...]:
        """Status columns of the same poll that ``read()`` returns now."""
        return self._status_at(self._index())

    def next_change_s(self) -> float:
        """When (sidecar clock, s) the next poll plays: ``read()`` and ``status()`` keep until then."""
        i = self._index() + 1
        if i >= len(self._times):
            return math.inf
        return self._t0 + (float(self._times[i]) - self._first_t) / self._speed

    def close(self) -> None:
        """Nothing to release: the file was read (into arrays) at construction."""

    # -- replay extras -------------------------------------------------------

    @property
    def exhausted(self) -> bool:
        """True once playback reached the last poll: ``read()`` will not change any more."""
        return self._trace_t() + _EPS_S >= float(self._times[-1])

    @property
    def comments(self) -> tuple[str, ...]:
        """The file's ``#`` lines without the ``#`` (recording metadata: GPU, driver, ...)."""
        return self._comments

    @property
    def duration_s(self) -> float:
        """Trace time from the first poll to the last, s (wall time is this / speed)."""
        return float(self._times[-1]) - self._first_t

    def readings(self) -> Iterator[Reading]:
        """Every poll in order, ``t_s`` as in the file (offline re-analysis; no clock)."""
        for t_s, energy_j in zip(self._times.tolist(), self._energy.tolist(), strict=True):
            yield Reading(t_s=t_s, energy_j=tuple(energy_j))

    def statuses(self) -> Iterator[tuple[DeviceStatus, ...]]:
        """Every poll's status, in the order of :meth:`readings`."""
        for i in range(len(self._times)):
            yield self._status_at(i)

    def _trace_t(self) -> float:
        return self._first_t + (self._clock() - self._t0) * self._speed

    def _index(self) -> int:
        return max(0, int(np.searchsorted(self._times, self._trace_t() + _EPS_S, side="right")) - 1)

    def _status_at(self, i: int) -> tuple[DeviceStatus, ...]:
        return tuple(
            DeviceStatus(d, *(None if math.isnan(v) else v for v in values))
            for d, values in zip(self._ids, self._status[i].tolist(), strict=True)
        )


# -- parsing -------------------------------------------------------------------


def _parse(path: Path) -> tuple[tuple[str, ...], _Columns]:
    """Comments and validated rows, read line by line; ReplayFormatError names the file, line and problem."""
    comments: list[str] = []
    header: dict[str, int] | None = None
    columns = _Columns()
    known: dict[str, int] = {}  # device id -> index
    in_poll: set[str] = set()  # devices in the poll being read
    last: tuple[float, int] | None = None  # t_s and line of the previous row
    number = 0
    try:
        with path.open(encoding="utf-8-sig") as lines:  # a spreadsheet's byte-order mark read past
            for number, line in enumerate(lines, start=1):
                if not line.strip():
                    continue
                if line.lstrip().startswith("#"):
                    comment = line.lstrip()[1:].strip()
                    _check_version(path, number, comment)
                    comments.append(comment)
                    continue
                cells = [c.strip() for c in next(csv.reader([line]))]
                if header is None:
                    header = _header(path, number, cells)
                    continue
                t_s, device = _row(path, number, header, cells, columns)
                if last is not None and t_s < last[0]:
                    raise ReplayFormatError(
                        f"{path}:{number}: t_s goes backwards ({t_s} after {last[0]} on line {last[1]})"
                    )
                if last is None or t_s != last[0]:
                    in_poll.clear()
                if device in in_poll:
                    raise ReplayFormatError(f"{path}:{number}: device {device!r} twice at t_s={t_s}")
                in_poll.add(device)
                last = (t_s, number)
                columns.device.append(known.setdefault(device, len(known)))
    except (OSError, UnicodeDecodeError) as err:
        raise ConfigError(f"replay_path: cannot read {path}: {err}") from err
    if header is None:
        raise ReplayFormatError(f"{path}:{number + 1}: empty file: no header line")
    if last is None:
        raise ReplayFormatError(f"{path}:{number + 1}: no data rows after the header")
    columns.ids = list(known)
    return tuple(comments), columns


def _check_version(path: Path, number: int, comment: str) -> None:
    if comment.startswith(_MAGIC) and comment[len(_MAGIC) :].strip() != "1":
        raise ReplayFormatError(f"{path}:{number}: unsupported trace version {comment!r}; this reads v1")


def _header(path: Path, number: int, cells: list[str]) -> dict[str, int]:
    missing = [c for c in REQUIRED_COLUMNS if c not in cells]
    if missing:
        raise ReplayFormatError(
            f"{path}:{number}: header lacks required column(s) {', '.join(missing)} (has: {', '.join(cells)})"
        )
    duplicated = sorted({c for c in cells if cells.count(c) > 1})
    if duplicated:
        raise ReplayFormatError(f"{path}:{number}: header repeats column(s) {', '.join(duplicated)}")
    return {name: i for i, name in enumerate(cells)}


def _number(path: Path, number: int, column: str, text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not math.isfinite(value):
        raise ReplayFormatError(f"{path}:{number}: column {column}: {text!r} is not a finite number")
    return value


def _row(
    path: Path, number: int, header: dict[str, int], cells: list[str], columns: _Columns
) -> tuple[float, str]:
    """Check one data row and append its values to ``columns`` (not its device); its (t_s, device)."""
    if len(cells) != len(header):
        raise ReplayFormatError(f"{path}:{number}: {len(cells)} cells, the header has {len(header)}")

    def optional(column: str) -> float:
        if column not in header or not cells[header[column]]:
            return math.nan
        return _number(path, number, column, cells[header[column]])

    for column in REQUIRED_COLUMNS:
        if not cells[header[column]]:
            raise ReplayFormatError(f"{path}:{number}: column {column} is empty (required)")
    status = [optional(column) for column in OPTIONAL_COLUMNS]
    utilization = status[OPTIONAL_COLUMNS.index("utilization")]
    if not math.isnan(utilization) and not 0.0 <= utilization <= 1.0:
        raise ReplayFormatError(f"{path}:{number}: column utilization: {utilization} is outside 0..1")
    t_s = _number(path, number, "t_s", cells[header["t_s"]])
    energy_j = _number(path, number, "energy_j", cells[header["energy_j"]])
    columns.t_s.append(t_s)
    columns.energy_j.append(energy_j)
    columns.status.extend(status)
    return t_s, cells[header["device"]]


def _assemble(columns: _Columns) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Group rows into polls: (trace times, energy per poll and device, status per poll and device).

    A device absent from a poll carries its last row forward (energy and status); before
    its first row it shows its first energy and an unknown status.
    """
    t = np.frombuffer(columns.t_s, dtype=float)
    device = np.frombuffer(columns.device, dtype=np.int64)
    energy = np.frombuffer(columns.energy_j, dtype=float)
    status = np.frombuffer(columns.status, dtype=float).reshape(-1, len(OPTIONAL_COLUMNS))
    starts = np.concatenate([[True], t[1:] != t[:-1]])
    poll_of_row = np.cumsum(starts) - 1
    n_polls, n_dev = int(poll_of_row[-1]) + 1, len(columns.ids)
    energy_pd = np.empty((n_polls, n_dev))
    status_pd = np.empty((n_polls, n_dev, len(OPTIONAL_COLUMNS)))
    for d in range(n_dev):
        rows = np.flatnonzero(device == d)
        last = (
            np.searchsorted(poll_of_row[rows], np.arange(n_polls), side="right") - 1
        )  # -1: before the first
        energy_pd[:, d] = energy[rows[np.maximum(last, 0)]]
        status_pd[:, d] = np.where((last >= 0)[:, None], status[rows[np.maximum(last, 0)]], math.nan)
    return t[starts].copy(), energy_pd, status_pd
