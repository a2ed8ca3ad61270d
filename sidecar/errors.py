"""The sidecar's exceptions, one hierarchy.

    JouletraceError              (sidecar.contracts.errors, shared with the load generator)
    ├── ConfigError              a knob has a bad value (names the knob)
    ├── MeterError               anything below a meter
    │   ├── MeterUnavailable     no such meter here (driver, library, files missing); says the fix
    │   ├── DeviceNotFound       an index or UUID that the meter does not have
    │   ├── NotSupported         the device cannot do what was asked (e.g. energy counter pre-Volta)
    │   ├── DeviceLost           the GPU fell off the bus or the driver went away
    │   └── MeterReadError       a read failed for another reason (transient)
    ├── StartupError             a part could not start (a port in use); names the knob to change
    ├── ReplayFormatError        a malformed replay file (names file and line)
    └── WorkEventError           a work event that is negative, inverted or otherwise invalid

Vendor errors (NVML return codes, OS errors) are translated into these at the
meter boundary, with ``raise ... from err`` so the original stays visible.
"""

from __future__ import annotations

from sidecar.contracts.errors import JouletraceError

__all__ = [
    "ConfigError",
    "DeviceLost",
    "DeviceNotFound",
    "JouletraceError",
    "MeterError",
    "MeterReadError",
    "MeterUnavailable",
    "NotSupported",
    "ReplayFormatError",
    "StartupError",
    "WorkEventError",
]


class ConfigError(JouletraceError):
    """A configuration knob has an invalid value; the message names the knob."""


class MeterError(JouletraceError):
    """Base of the errors a meter raises."""


class MeterUnavailable(MeterError):
    """The meter cannot run on this machine; the message says how to fix it."""


class DeviceNotFound(MeterError):
    """A device index or UUID that the meter does not know."""


class NotSupported(MeterError):
    """The device does not support the requested reading."""


class DeviceLost(MeterError):
    """The device disappeared (fell off the bus, driver unloaded)."""


class MeterReadError(MeterError):
    """A read failed for a reason that may pass (timeout, busy)."""


class StartupError(JouletraceError):
    """A server or tap could not start (e.g. its port is in use); the message names the knob."""


class ReplayFormatError(JouletraceError):
    """A replay trace file is malformed; the message names the file and line."""


class WorkEventError(JouletraceError):
    """A work event is invalid (negative units, end before start, ...)."""
