"""Scraper of vLLM's own ``/metrics``: token counter deltas, latent metrics, plugin cross-check.

Each scrape is fetched and parsed on a worker thread (:mod:`.vllm_metrics_page`:
the whole fetch has a deadline, ``timeout_s``, and the page a size cap), so a hung,
trickling or huge vLLM page never stalls the sidecar's loop; the tick takes only
the values read, summed over engines:

* counters ``vllm:prompt_tokens_total``, ``vllm:generation_tokens_total`` and the
  iteration count ``vllm:iteration_tokens_total_count``: exact tokens and steps
  processed between scrapes (:attr:`totals`);
* gauges ``vllm:num_requests_running``, ``vllm:num_requests_waiting``,
  ``vllm:kv_cache_usage_perc``: the study's latent metrics (batch size, memory).

When the plugin also runs, its per-iteration token counts must add up to the
counter deltas: :attr:`mismatch` is (counter delta - plugin delta) since both
were first seen, per phase (tokens; 0 when they agree), exported as a
self-metric. Counters that go backwards mean vLLM restarted: the baselines are
taken again (``restarts``). A scrape that times out (``timeouts``), fails
(``errors``) or brings a page over the caps (``too_large``, ``too_many_samples``)
is counted and retried at the next interval; one still in flight at twice its
deadline (a target trickling its header lines: the fetch checks its deadline
only between reads) is also counted ``overdue``, once. After a few failed in a
row the gauges are dropped from :attr:`latest` rather than shown stale. Every
sample read must be a finite, non-negative number (:mod:`.validate`); one that
is not is skipped and counted (``rejected_<reason>``), the others of the scrape
are used; a page the parser cannot read, or with none of those samples, is counted
(``malformed``). Units: seconds, tokens.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor

from sidecar.attribution.events import RequestInfo, WorkEvent
from sidecar.taps.vllm_metrics_page import METRIC_NAMES, PageTooLarge, Scrape, parse_metrics, scrape

__all__ = ["METRIC_NAMES", "MetricsScraper", "parse_metrics"]

log = logging.getLogger(__name__)

_COUNTERS = ("prompt", "generation", "iterations")
_GAUGES = ("running", "waiting", "kv_cache_usage")
_ARRIVAL_S = 0.3  # the plugin's datagrams for a moment have been drained this long after it
_STALE_AFTER_FAILURES = 3  # failed scrapes in a row after which vLLM's gauges are no longer shown

TokensAt = Callable[[float], tuple[int, int] | None]


class MetricsScraper:
    """Scrapes ``url`` every ``interval_s`` (off the loop); a work source with no work of its own."""

    def __init__(
        self,
        url: str,
        *,
        interval_s: float = 1.0,
        timeout_s: float = 1.0,
        plugin_tokens: TokensAt | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.url = url
        self.interval_s = interval_s
        self.timeout_s = timeout_s
        self.plugin_tokens = plugin_tokens
        self.clock = clock
        self.counts: Counter[str] = Counter()
        self.latest: dict[str, float] = {}
        self.totals = dict.fromkeys(_COUNTERS, 0.0)  # counter deltas since the first scrape
        self.mismatch: dict[str, float] = {}
        self._prev: dict[str, float] | None = None
        self._base: tuple[float, float, int, int] | None = None  # M_prompt, M_gen, P_prompt, P_gen
        # before, after (Unix s), M_prompt, M_gen of the last scrape, checked _ARRIVAL_S later
        self._pending_check: tuple[float, float, float, float] | None = None
        self._pool: ThreadPoolExecutor | None = None
        self._future: Future[Scrape] | None = None
        self._failures = 0  # failed scrapes since the last good one
        self._started_s = 0.0  # clock() when the scrape in flight began
        self._overdue = False  # the scrape in flight was counted ``overdue``
        self._next_s = 0.0

    def start(self) -> int:
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="jouletrace-scrape")
        return 0

    def stop(self, grace_s: float = 1.0) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = None

    def due(self, now_s: float) -> tuple[list[WorkEvent], list[RequestInfo]]:
        """Collect a finished scrape, start the next one when it is time."""
        future = self._future
        if future is not None and future.done():
            self._future = None
            self._collect(future)
        if self._pending_check is not None and time.time() >= self._pending_check[1] + _ARRIVAL_S:
            self._check()
        now = self.clock()
        if self._future is not None and not self._overdue and now > self._started_s + 2 * self.timeout_s:
            self._overdue = True  # its header or chunk lines trickle in: each read is short, the fetch is not
            self._failed("overdue", TimeoutError("a scrape still in flight at twice its deadline"))
        if self._future is None and self._pool is not None and now >= self._next_s:
            self._next_s, self._started_s, self._overdue = now + self.interval_s, now, False
            self._future = self._pool.submit(scrape, self.url, self.timeout_s)
        return [], []

    def _collect(self, future: Future[Scrape]) -> None:
        """Take a finished scrape's values, or count why it has none."""
        try:
            done = future.result()
        except PageTooLarge as err:
            self._failed(err.reason, err)
        except TimeoutError as err:
            self._failed("timeouts", err)
        except OSError as err:
            self._failed("timeouts" if "timed out" in str(err) else "errors", err)
        except Exception as err:  # whatever the parser makes of garbage: this scrape only
            self._failed("malformed", err)
        else:
            self.counts.update(done.rejected)
            self._take(done.values, done.before_s, done.after_s)

    def _failed(self, outcome: str, err: Exception) -> None:
        self.counts[outcome] += 1
        self._failures += 1
        if self._failures >= _STALE_AFTER_FAILURES:  # vLLM's load is unknown, not what it last was
            self.latest = {k: x for k, x in self.latest.items() if k not in _GAUGES}
        log.debug("scrape of %s failed (%s): %s", self.url, outcome, err)

    def ingest(self, text: str, before_s: float, after_s: float) -> None:
        """Take one exposition scraped between Unix times ``before_s`` and ``after_s`` (tests call it)."""
        self._take(parse_metrics(text, self.counts), before_s, after_s)

    def _take(self, values: dict[str, float], before_s: float, after_s: float) -> None:
        """Take one scrape's values: counter deltas, restarts, the latest gauges."""
        for k in _COUNTERS:  # a counter whose sample was refused keeps its last value (not a reset)
            if k not in values and self._prev is not None and k in self._prev:
                values[k] = self._prev[k]
        self.counts["scrapes"] += 1
        self._failures = 0
        self.latest = values
        if self._prev is not None and any(values.get(k, 0.0) < self._prev.get(k, 0.0) for k in _COUNTERS):
            self.counts["restarts"] += 1
            self._prev, self._base, self._pending_check = None, None, None
        if self._prev is not None:
            for k in _COUNTERS:
                self.totals[k] += values.get(k, 0.0) - self._prev.get(k, 0.0)
        self._prev = values
        if self.plugin_tokens is not None:
            m_prompt, m_gen = values.get("prompt", 0.0), values.get("generation", 0.0)
            self._pending_check = (before_s, after_s, m_prompt, m_gen)

    def _check(self) -> None:
        """Compare the last scrape with the plugin, once its datagrams for that time have arrived.

        Only scrapes during which no iteration was recorded count: then the counters
        and the plugin's cumulative tokens describe exactly the same iterations. The
        first such scrape is the baseline.
        """
        pending, self._pending_check = self._pending_check, None
        if pending is None or self.plugin_tokens is None:
            return
        plugin = self.plugin_tokens(pending[0])
        if plugin is None or plugin != self.plugin_tokens(pending[1]):
            return
        if self._base is None:
            self._base = (pending[2], pending[3], plugin[0], plugin[1])
            return
        b = self._base
        self.mismatch = {
            "prefill": (pending[2] - b[0]) - (plugin[0] - b[2]),
            "decode": (pending[3] - b[1]) - (plugin[1] - b[3]),
        }
