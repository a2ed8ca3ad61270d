"""Backpressure for the OTLP receiver: refuse exports while memory or the sealing backlog is over a limit.

The OpenTelemetry Collector's ``memory_limiter`` processor, for one sidecar: it checks the
process's memory every so often and, over the limit, refuses data with an error the sender
retries, so exporters back off instead of the process growing; at its hard limit it also
forces a garbage collection. Here, before an export is decoded (a refused export costs neither
decoding CPU nor the memory of its spans):

* **memory**: the resident set size (``/proc/self/statm``: one small read, at most every
  :data:`CHECK_INTERVAL_S`) over the memory limit (``otlp_memory_limit_mb``, or
  ``otlp_memory_limit_percent`` of the container's: :mod:`sidecar.container_memory`). Over it,
  glibc's freed-but-retained heap is given back first (``malloc_trim``, at most once a second:
  the Collector's forced GC); only what is still over refuses. Python keeps freed memory for
  reuse, so the RSS may stay over the limit after the load that raised it is gone; refusing
  everything then would free nothing and lose every span, so over the limit one export per retry
  delay is still taken (a trickle: 512 spans a second at vLLM's batch size and the default 1 s).
  0 turns the check off;
* **backlog**: work rows the attribution has not split yet (new, pending, held for the fit's
  warm-up) over ``otlp_backlog_limit_rows``. Spans arrive faster than ticks are sealed and
  their work and requests pile up; the vLLM plugin's and hook's iterations (the measured work)
  are never refused, and refusing the spans first keeps them under ``max_pending_rows``, where
  work would be dropped for good. With it, the requests in flight over :data:`REQUESTS_SHARE` of
  ``max_requests``, where the oldest would be ended early (``evicted``): a span brings one
  request and two work rows (a prefill and a decode, cut when sealed), so a flood fills the
  request table long before the rows' limit. 0 turns both checks off.

A refused export gets gRPC ``UNAVAILABLE``, which OTLP names the backpressure signal (the spec's
"OTLP/gRPC Throttling"): the exporter keeps the data and retries it, after the delay in the
``RetryInfo`` detail (``otlp_retry_delay_s``). The detail travels twice in the trailing metadata:
as a ``google.rpc.Status`` in ``grpc-status-details-bin`` (what the Collector and the Go and Java
exporters read) and as ``google.rpc.retryinfo-bin`` (what the Python exporter, vLLM's, reads).
Each refusal is counted by reason (``refused_memory``, ``refused_backlog``: exports, a retried
export counted again); the spans of a refused export are not (it is not decoded).
"""

from __future__ import annotations

import logging
import math
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from sidecar import malloc_tune

__all__ = [
    "CHECK_INTERVAL_S",
    "LIMIT_REFRESH_S",
    "REQUESTS_SHARE",
    "ExportLimiter",
    "Refusal",
    "rss_mb",
    "status_details",
]

log = logging.getLogger(__name__)

CHECK_INTERVAL_S = 0.05  # the RSS is read at most this often (an export is ~1 ms of decoding)
# the memory limit is read again at most this often, where it can change (a container's limit
# resized in place, as Kubernetes does without a restart)
LIMIT_REFRESH_S = 5.0
REQUESTS_SHARE = 0.9  # of max_requests: over it, spans are refused (retryable) before requests are evicted
_TRIM_INTERVAL_S = 1.0  # malloc_trim at most this often while over the memory limit
_PAGE_MB = os.sysconf("SC_PAGE_SIZE") / (1024 * 1024) if hasattr(os, "sysconf") else 4096 / (1024 * 1024)


def rss_mb() -> float:
    """This process's resident set size in MB (Linux ``/proc/self/statm``; NaN elsewhere)."""
    try:
        with open("/proc/self/statm", "rb") as f:
            return int(f.read().split()[1]) * _PAGE_MB
    except (OSError, IndexError, ValueError):
        return math.nan


@dataclass(frozen=True, slots=True)
class Refusal:
    """Why an export is refused: the counted reason and the message the exporter sees."""

    reason: str  # "memory", "backlog" or the receiver's "queue_full": counted as ``refused_<reason>``
    message: str


class ExportLimiter:
    """Decides, before an export is decoded, whether the sidecar can take it (any thread)."""

    def __init__(
        self,
        *,
        memory_limit_mb: float = 0.0,
        backlog_limit_rows: int = 0,
        backlog_rows: Callable[[], int] = lambda: 0,
        requests_limit: int = 0,
        requests: Callable[[], int] = lambda: 0,
        retry_delay_s: float = 1.0,
        rss: Callable[[], float] = rss_mb,
        trim: Callable[[], bool] = malloc_tune.trim,
        clock: Callable[[], float] = time.monotonic,
        memory_limit: Callable[[], float] | None = None,
    ) -> None:
        """``memory_limit``: where the limit can change, what it is now (MB; 0: none), asked at most
        every :data:`LIMIT_REFRESH_S`; ``memory_limit_mb`` is the limit until then. ``requests``: the
        requests in flight, refused over ``requests_limit`` (0: no limit) as a backlog too."""
        self.memory_limit_mb = memory_limit_mb
        self.backlog_limit_rows = backlog_limit_rows
        self.retry_delay_s = retry_delay_s
        self._backlog_rows = backlog_rows
        self.requests_limit = requests_limit
        self._requests = requests
        self._rss, self._trim, self._clock = rss, trim, clock
        self._lock = threading.Lock()
        self._rss_mb = 0.0
        self._read_at = -math.inf
        self._trimmed_at = -math.inf
        self._let_through_at = -math.inf  # when an export over the memory limit was last taken
        self._memory_limit = memory_limit
        self._limit_read_at = clock()
        self._limit_unread = False  # the last read failed (logged once)

    def _refresh_limit(self) -> None:
        """Read the memory limit again, once :data:`LIMIT_REFRESH_S` has passed; a change is logged."""
        now = self._clock()
        with self._lock:
            if self._memory_limit is None or now - self._limit_read_at < LIMIT_REFRESH_S:
                return
            self._limit_read_at = now
        try:
            limit_mb = self._memory_limit()
        except Exception as err:  # not known now (or a bug): the limit stays, the export is judged by it
            if not self._limit_unread:  # once while it lasts
                log.warning(
                    "OTLP memory limit: cannot be read again (%s); %.0f MB kept", err, self.memory_limit_mb
                )
            self._limit_unread = True
            return
        self._limit_unread = False
        if limit_mb != self.memory_limit_mb:
            log.info("OTLP memory limit now %.0f MB, was %.0f MB (0: none)", limit_mb, self.memory_limit_mb)
            self.memory_limit_mb = limit_mb

    def refusal(self) -> Refusal | None:
        """None if an export may be decoded now; else why not."""
        self._refresh_limit()
        if self.memory_limit_mb > 0:
            used_mb = self._memory_mb()
            if used_mb > self.memory_limit_mb and not self._trickle():
                return Refusal(
                    "memory",
                    f"jouletrace is over its memory limit ({used_mb:.0f} MB resident, limit "
                    f"{self.memory_limit_mb:.0f} MB: otlp_memory_limit_mb, otlp_memory_limit_percent); "
                    "retry later",
                )
        return _behind(
            self._backlog_rows,
            self.backlog_limit_rows,
            "work rows wait to be sealed",
            "otlp_backlog_limit_rows",
        ) or _behind(
            self._requests, self.requests_limit, "requests in flight", f"{REQUESTS_SHARE:.0%} of max_requests"
        )

    def _trickle(self) -> bool:
        """True for one export per retry delay (over the memory limit: taken all the same)."""
        now = self._clock()
        with self._lock:
            if now - self._let_through_at < self.retry_delay_s:
                return False
            self._let_through_at = now
            return True

    def _memory_mb(self) -> float:
        """The RSS, read again once :data:`CHECK_INTERVAL_S` has passed; over the limit, after a trim."""
        now = self._clock()
        with self._lock:
            if now - self._read_at < CHECK_INTERVAL_S:
                return self._rss_mb
            self._read_at = now
            used_mb = self._rss()
            if used_mb > self.memory_limit_mb and now - self._trimmed_at >= _TRIM_INTERVAL_S:
                self._trimmed_at = now
                if self._trim():  # freed heap back to the kernel, then read again
                    used_mb = self._rss()
            self._rss_mb = used_mb
            return used_mb


def _behind(count: Callable[[], int], limit: int, what: str, named: str) -> Refusal | None:
    """A backlog refusal if ``count()`` is over ``limit`` (0: no limit; not counted then)."""
    if limit <= 0:
        return None
    n = count()
    if n <= limit:
        return None
    return Refusal("backlog", f"jouletrace is behind: {n} {what} (limit {limit}: {named}); retry later")


def status_details(message: str, retry_delay_s: float) -> tuple[tuple[str, bytes], ...]:
    """Trailing metadata for an ``UNAVAILABLE`` that carries a ``RetryInfo`` (see the module doc)."""
    from google.protobuf.any_pb2 import Any as AnyProto  # type: ignore[import-untyped]
    from google.protobuf.duration_pb2 import Duration  # type: ignore[import-untyped]
    from google.rpc import code_pb2, error_details_pb2, status_pb2  # type: ignore[import-untyped]

    seconds = math.floor(retry_delay_s)
    retry = error_details_pb2.RetryInfo(
        retry_delay=Duration(seconds=seconds, nanos=round((retry_delay_s - seconds) * 1e9))
    )
    detail = AnyProto()
    detail.Pack(retry)
    status = status_pb2.Status(code=code_pb2.UNAVAILABLE, message=message, details=[detail])
    return (
        ("grpc-status-details-bin", status.SerializeToString()),
        ("google.rpc.retryinfo-bin", retry.SerializeToString()),
    )
