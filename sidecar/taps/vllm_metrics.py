"""Scraper of vLLM's own ``/metrics``: token counter deltas, latent metrics, plugin cross-check.

Each scrape (on a worker thread, with a short timeout, so a hung vLLM never
stalls the sidecar's loop) reads, summed over engines:

* counters ``vllm:prompt_tokens_total``, ``vllm:generation_tokens_total`` and the
  iteration count ``vllm:iteration_tokens_total_count``: exact tokens and steps
  processed between scrapes (:attr:`totals`);
* gauges ``vllm:num_requests_running``, ``vllm:num_requests_waiting``,
  ``vllm:kv_cache_usage_perc``: the study's latent metrics (batch size, memory).

When the plugin also runs, its per-iteration token counts must add up to the
counter deltas: :attr:`mismatch` is (counter delta - plugin delta) since both
were first seen, per phase (tokens; 0 when they agree), exported as a
self-metric. Counters that go backwards mean vLLM restarted: the baselines are
taken again (``restarts``). A scrape that times out or fails is counted and
retried at the next interval. Every sample read must be a finite, non-negative
number (:mod:`.validate`); one that is not is skipped and counted
(``rejected_<reason>``), the others of the scrape are used; an exposition the
parser cannot read at all is counted (``malformed``). Units: seconds, tokens.
"""

from __future__ import annotations

import logging
import time
import urllib.request
from collections import Counter
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor

from prometheus_client.parser import text_string_to_metric_families

from sidecar.attribution.events import RequestInfo, WorkEvent
from sidecar.taps import validate as v

__all__ = ["METRIC_NAMES", "MetricsScraper", "parse_metrics"]

log = logging.getLogger(__name__)

# sample name -> our key (pinned by a contract test against the installed vLLM)
METRIC_NAMES = {
    "vllm:prompt_tokens_total": "prompt",
    "vllm:generation_tokens_total": "generation",
    "vllm:iteration_tokens_total_count": "iterations",
    "vllm:num_requests_running": "running",
    "vllm:num_requests_waiting": "waiting",
    "vllm:kv_cache_usage_perc": "kv_cache_usage",
}
_COUNTERS = ("prompt", "generation", "iterations")
_ARRIVAL_S = 0.3  # the plugin's datagrams for a moment have been drained this long after it

_MAX_VALUE = 1e18  # tokens, requests or a fraction: anything larger is not a real counter
TokensAt = Callable[[float], tuple[int, int] | None]


def parse_metrics(text: str, rejected: Counter[str] | None = None) -> dict[str, float]:
    """The samples of :data:`METRIC_NAMES` in a Prometheus exposition, summed over label sets.

    A sample that is not a finite number in ``0..1e18`` is skipped and counted in ``rejected``.
    """
    out: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            key = METRIC_NAMES.get(sample.name)
            if key is None:
                continue
            try:
                value = v.count(sample.value, sample.name, _MAX_VALUE)
            except v.Rejected as err:
                if rejected is not None:
                    v.note(rejected, err)
                continue
            out[key] = out.get(key, 0.0) + value
    return out


def _fetch(url: str, timeout_s: float) -> tuple[float, float, str]:
    """(Unix time before, Unix time after, exposition text)."""
    before = time.time()
    with urllib.request.urlopen(url, timeout=timeout_s) as resp:  # a configured URL
        text = resp.read().decode("utf-8", "replace")
    return before, time.time(), text


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
        self._future: Future[tuple[float, float, str]] | None = None
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
            try:
                before, after, text = future.result()
                self.ingest(text, before, after)
            except TimeoutError:
                self.counts["timeouts"] += 1
            except OSError as err:
                self.counts["timeouts" if "timed out" in str(err) else "errors"] += 1
                log.debug("scrape of %s failed: %s", self.url, err)
            except Exception as err:  # whatever the parser makes of garbage: this scrape only
                self.counts["malformed"] += 1
                log.debug("bad exposition from %s: %s", self.url, err)
        if self._pending_check is not None and time.time() >= self._pending_check[1] + _ARRIVAL_S:
            self._check()
        now = self.clock()
        if self._future is None and self._pool is not None and now >= self._next_s:
            self._next_s = now + self.interval_s
            self._future = self._pool.submit(_fetch, self.url, self.timeout_s)
        return [], []

    def ingest(self, text: str, before_s: float, after_s: float) -> None:
        """Take one exposition scraped between Unix times ``before_s`` and ``after_s`` (tests call it)."""
        values = parse_metrics(text, self.counts)
        for k in _COUNTERS:  # a counter whose sample was refused keeps its last value (not a reset)
            if k not in values and self._prev is not None and k in self._prev:
                values[k] = self._prev[k]
        self.counts["scrapes"] += 1
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
