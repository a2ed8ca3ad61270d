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

import bisect
import csv
import math
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from sidecar.errors import ConfigError, ReplayFormatError
from sidecar.meters.base import DeviceInfo, DeviceStatus, EnergySource, Reading

__all__ = ["OPTIONAL_COLUMNS", "REQUIRED_COLUMNS", "ReplayMeter"]

REQUIRED_COLUMNS = ("t_s", "device", "energy_j")
OPTIONAL_COLUMNS = ("power_w", "utilization", "sm_clock_mhz", "memory_used_bytes", "power_limit_w")
_MAGIC = "jouletrace replay trace v"
_EPS_S = 1e-9  # trace-time slack: rows are written with µs precision; float playback may be 1 ulp short


@dataclass(frozen=True, slots=True)
class _Row:
    line: int
    t_s: float
    device: str
    energy_j: float
    status: DeviceStatus


@dataclass(frozen=True, slots=True)
class _Poll:
    t_s: float  # trace time, as in the file
    energy_j: tuple[float, ...]
    status: tuple[DeviceStatus, ...]


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
        self._comments, rows = _parse(self._path)
        self._devices, self._polls = _assemble(rows)
        self._times = [p.t_s for p in self._polls]
        self._first_t = self._times[0]
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
        poll = self._polls[self._index()]
        return Reading(t_s=self._t0 + (poll.t_s - self._first_t) / self._speed, energy_j=poll.energy_j)

    def status(self) -> tuple[DeviceStatus, ...]:
        """Status columns of the same poll that ``read()`` returns now."""
        return self._polls[self._index()].status

    def close(self) -> None:
        """Nothing to release: the file was read whole at construction."""

    # -- replay extras -------------------------------------------------------

    @property
    def exhausted(self) -> bool:
        """True once playback reached the last poll: ``read()`` will not change any more."""
        return self._trace_t() + _EPS_S >= self._times[-1]

    @property
    def comments(self) -> tuple[str, ...]:
        """The file's ``#`` lines without the ``#`` (recording metadata: GPU, driver, ...)."""
        return self._comments

    @property
    def duration_s(self) -> float:
        """Trace time from the first poll to the last, s (wall time is this / speed)."""
        return self._times[-1] - self._first_t

    def readings(self) -> Iterator[Reading]:
        """Every poll in order, ``t_s`` as in the file (offline re-analysis; no clock)."""
        for poll in self._polls:
            yield Reading(t_s=poll.t_s, energy_j=poll.energy_j)

    def statuses(self) -> Iterator[tuple[DeviceStatus, ...]]:
        """Every poll's status, in the order of :meth:`readings`."""
        for poll in self._polls:
            yield poll.status

    def _trace_t(self) -> float:
        return self._first_t + (self._clock() - self._t0) * self._speed

    def _index(self) -> int:
        return max(0, bisect.bisect_right(self._times, self._trace_t() + _EPS_S) - 1)


# -- parsing -------------------------------------------------------------------


def _parse(path: Path) -> tuple[tuple[str, ...], list[_Row]]:
    """Comments and validated rows; ReplayFormatError names the file, line and problem."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as err:
        raise ConfigError(f"replay_path: cannot read {path}: {err}") from err
    comments: list[str] = []
    header: dict[str, int] | None = None
    rows: list[_Row] = []
    in_poll: set[str] = set()  # devices in the poll being read
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
        row = _row(path, number, header, cells)
        if rows and row.t_s < rows[-1].t_s:
            raise ReplayFormatError(
                f"{path}:{number}: t_s goes backwards "
                f"({row.t_s} after {rows[-1].t_s} on line {rows[-1].line})"
            )
        if not rows or row.t_s != rows[-1].t_s:
            in_poll.clear()
        if row.device in in_poll:
            raise ReplayFormatError(f"{path}:{number}: device {row.device!r} twice at t_s={row.t_s}")
        in_poll.add(row.device)
        rows.append(row)
    if header is None:
        raise ReplayFormatError(f"{path}:{len(lines) + 1}: empty file: no header line")
    if not rows:
        raise ReplayFormatError(f"{path}:{len(lines) + 1}: no data rows after the header")
    return tuple(comments), rows


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


def _row(path: Path, number: int, header: dict[str, int], cells: list[str]) -> _Row:
    if len(cells) != len(header):
        raise ReplayFormatError(f"{path}:{number}: {len(cells)} cells, the header has {len(header)}")

    def optional(column: str) -> float | None:
        if column not in header or not cells[header[column]]:
            return None
        return _number(path, number, column, cells[header[column]])

    for column in REQUIRED_COLUMNS:
        if not cells[header[column]]:
            raise ReplayFormatError(f"{path}:{number}: column {column} is empty (required)")
    device = cells[header["device"]]
    utilization = optional("utilization")
    if utilization is not None and not 0.0 <= utilization <= 1.0:
        raise ReplayFormatError(f"{path}:{number}: column utilization: {utilization} is outside 0..1")
    status = DeviceStatus(
        device_id=device,
        power_w=optional("power_w"),
        utilization=utilization,
        sm_clock_mhz=optional("sm_clock_mhz"),
        memory_used_bytes=optional("memory_used_bytes"),
        power_limit_w=optional("power_limit_w"),
    )
    return _Row(
        line=number,
        t_s=_number(path, number, "t_s", cells[header["t_s"]]),
        device=device,
        energy_j=_number(path, number, "energy_j", cells[header["energy_j"]]),
        status=status,
    )


def _assemble(rows: list[_Row]) -> tuple[tuple[DeviceInfo, ...], list[_Poll]]:
    """Group rows into polls, carrying each device's last value through polls that lack it."""
    first: dict[str, _Row] = {}
    for row in rows:
        first.setdefault(row.device, row)
    ids = list(first)
    energy = {d: r.energy_j for d, r in first.items()}
    status = {d: DeviceStatus(device_id=d) for d in ids}  # unknown until the device's first row
    polls: list[_Poll] = []
    start = 0
    while start < len(rows):
        end = start
        while end < len(rows) and rows[end].t_s == rows[start].t_s:
            energy[rows[end].device] = rows[end].energy_j
            status[rows[end].device] = rows[end].status
            end += 1
        polls.append(
            _Poll(
                t_s=rows[start].t_s,
                energy_j=tuple(energy[d] for d in ids),
                status=tuple(status[d] for d in ids),
            )
        )
        start = end
    devices = tuple(DeviceInfo(id=d, name=d, type="gpu", wrap_j=None) for d in ids)
    return devices, polls
