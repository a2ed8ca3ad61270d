"""The memory limit of the container the sidecar runs in (its cgroup), and the OTLP limit taken from it.

Kubernetes puts a container's ``resources.limits.memory`` in its cgroup: ``memory.max`` under
cgroup v2, ``memory.limit_in_bytes`` under v1. Over it the kernel kills the process, and with it
every measured joule not yet stored; so the OTLP receiver's memory limit
(:mod:`sidecar.taps.otlp_limit`) should sit below it, as the OpenTelemetry Collector's
``memory_limiter`` does with ``limit_percentage``. A fixed ``otlp_memory_limit_mb`` had to be kept
in step with the chart's limit by hand; ``otlp_memory_limit_percent`` follows the limit itself.

The cgroup is found as the kernel names it in ``/proc/self/cgroup`` under the cgroup mount, then
each folder above it up to the mount's root (a container with its own cgroup namespace sees its
cgroup there); under cgroup v1 the memory controller's folder may be shared with others
(``cpu,memory``). No limit ("max", v1's near-2**63 "unlimited", no file) is None: the percent
then does not apply. A file that is there but cannot be read or holds no number of bytes raises
:class:`UnreadableLimit`: not knowing the limit is not the same as having none (the caller keeps
the limit it had).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

__all__ = ["UnreadableLimit", "container_limit_mb", "otlp_memory_limit_mb"]

_MB = 1024 * 1024
_UNLIMITED_BYTES = 1 << 60  # cgroup v1 says "no limit" with a page-rounded 2**63 - 1


class UnreadableLimit(Exception):
    """A cgroup file that is there could not be read, or does not hold a limit."""


def container_limit_mb(
    mount: Path = Path("/sys/fs/cgroup"), self_cgroup: Path = Path("/proc/self/cgroup")
) -> float | None:
    """This process's cgroup memory limit in MB, or None where there is none; raises
    :class:`UnreadableLimit` where a file that is there cannot be read.

    The lowest limit on the way from the process's cgroup up to the mount's root (a pod's limit
    also binds its containers), in the first hierarchy that has the limit's file: v2, then v1."""
    for name, dirs in _hierarchies(mount, _read(self_cgroup) or ""):
        texts = [t for t in (_read(d / name) for d in dirs) if t is not None]
        if texts:
            limits = [mb for mb in (_limit_mb(t.strip()) for t in texts) if mb is not None]
            return min(limits, default=None)
    return None


def _hierarchies(mount: Path, cgroups: str) -> Iterator[tuple[str, list[Path]]]:
    """(the limit's file name, the folders to look in: the process's cgroup and each one above it),
    v2 first; v1's folders are only listed if asked for (v2 had no limit's file)."""
    v2 = v1 = ""
    for line in cgroups.splitlines():
        hierarchy, _, rest = line.partition(":")
        controllers, _, path = rest.partition(":")
        if hierarchy == "0" and controllers == "":
            v2 = path
        elif "memory" in controllers.split(","):
            v1 = path
    yield "memory.max", _up(mount, v2)
    for root in _v1_memory_roots(mount):
        yield "memory.limit_in_bytes", _up(root, v1)


def _v1_memory_roots(mount: Path) -> list[Path]:
    """cgroup v1's memory hierarchy: ``memory``, or a folder it shares (``cpu,memory``)."""
    try:
        shared = sorted(d for d in mount.iterdir() if "memory" in d.name.split(",") and d.name != "memory")
    except OSError:
        shared = []
    return [mount / "memory", *shared]


def _up(root: Path, cgroup_path: str) -> list[Path]:
    """``root`` joined with a cgroup path as /proc names it, then each folder above it up to ``root``."""
    parts = [p for p in cgroup_path.split("/") if p not in ("", ".", "..")]
    return [root.joinpath(*parts[:n]) for n in range(len(parts), -1, -1)]


def _read(path: Path) -> str | None:
    """The file's text; None if it is not there."""
    try:
        return path.read_text(encoding="ascii", errors="replace")[:4096]
    except (FileNotFoundError, NotADirectoryError):
        return None
    except OSError as err:  # no permission, no file descriptor left, ...
        raise UnreadableLimit(f"{path}: {err}") from err


def _limit_mb(text: str) -> float | None:
    if text == "max":
        return None
    if not (text.isascii() and text.isdigit()):
        raise UnreadableLimit(f"{text[:64]!r} is not a number of bytes")
    limit = int(text)
    if limit <= 0 or limit >= _UNLIMITED_BYTES:
        return None
    return limit / _MB


def otlp_memory_limit_mb(limit_mb: float, limit_percent: float, container_mb: float | None) -> float:
    """The OTLP receiver's memory limit: the lower of ``otlp_memory_limit_mb`` and
    ``otlp_memory_limit_percent`` of the container's limit, each where it applies (a knob of 0 is off;
    the percent needs a container limit); 0 where neither applies (no limit)."""
    limits = [limit_mb] if limit_mb > 0 else []
    if limit_percent > 0 and container_mb is not None:
        limits.append(container_mb * limit_percent / 100.0)
    return min(limits, default=0.0)
