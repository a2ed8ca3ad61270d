"""One scrape of vLLM's ``/metrics``, fetched and parsed on the scraper's worker thread.

A page is read in pieces, at most :data:`MAX_PAGE_BYTES` (a larger one is refused
whole, :class:`PageTooLarge`, and never read further) and for at most the scrape's
deadline in all (a target that trickles bytes is abandoned, :class:`TimeoutError`).
Only the lines of the samples in :data:`METRIC_NAMES` reach prometheus_client's
parser, at most :data:`MAX_SAMPLES` of them, so a page's other series cost one
regular-expression pass, and the tick gets the few values it uses. Units: seconds, bytes.
"""

from __future__ import annotations

import re
import time
import urllib.request
from collections import Counter
from dataclasses import dataclass, field

from prometheus_client.parser import text_string_to_metric_families

from sidecar.taps import validate as v

__all__ = [
    "MAX_PAGE_BYTES",
    "MAX_SAMPLES",
    "METRIC_NAMES",
    "PageTooLarge",
    "Scrape",
    "parse_metrics",
    "scrape",
]

# sample name -> our key (pinned by a contract test against the installed vLLM)
METRIC_NAMES = {
    "vllm:prompt_tokens_total": "prompt",
    "vllm:generation_tokens_total": "generation",
    "vllm:iteration_tokens_total_count": "iterations",
    "vllm:num_requests_running": "running",
    "vllm:num_requests_waiting": "waiting",
    "vllm:kv_cache_usage_perc": "kv_cache_usage",
}
# vLLM's page is ~130 sample names, one series each per engine (plus histogram buckets): a few
# MiB leaves room for many engines and labels and bounds what a hostile target can make us hold.
MAX_PAGE_BYTES = 4 << 20
MAX_SAMPLES = 4096  # lines of the samples read (6 per engine): more is not vLLM's page
_PIECE_BYTES = 64 << 10  # read, and searched for the lines read, this much at a time
_MAX_VALUE = 1e18  # tokens, requests or a fraction: anything larger is not a real counter
# a line of a sample read: optional indent, the exact name, then labels or the value
_NAMES = "|".join(re.escape(name) for name in METRIC_NAMES)
_WANTED = re.compile(rf"^[ \t]*(?:{_NAMES})[{{ \t][^\n]*", re.MULTILINE)


class PageTooLarge(ValueError):
    """A page over :data:`MAX_PAGE_BYTES` (``too_large``) or :data:`MAX_SAMPLES` (``too_many_samples``)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass
class Scrape:
    """The values of one page (summed over label sets), between Unix times ``before_s`` and ``after_s``."""

    before_s: float
    after_s: float
    values: dict[str, float]
    rejected: Counter[str] = field(default_factory=Counter)


def parse_metrics(text: str, rejected: Counter[str] | None = None) -> dict[str, float]:
    """The samples of :data:`METRIC_NAMES` in a Prometheus exposition, summed over label sets.

    A sample that is not a finite number in ``0..1e18`` is skipped and counted in ``rejected``.
    Raises :class:`ValueError` for a page with none of those samples (not vLLM's) or one the
    parser cannot read, :class:`PageTooLarge` for more than :data:`MAX_SAMPLES` of them.
    """
    lines = _wanted_lines(text)
    if not lines:
        raise ValueError("no sample of vLLM's on the page")
    if len(lines) > MAX_SAMPLES:
        raise PageTooLarge("too_many_samples")
    out: dict[str, float] = {}
    for family in text_string_to_metric_families("\n".join(lines) + "\n"):
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


def _wanted_lines(text: str) -> list[str]:
    """The lines of the samples read, searched for a piece at a time: between pieces the
    worker thread lets go of the interpreter, so the loop's thread is never held long."""
    out: list[str] = []
    pos = 0
    while pos < len(text):
        end = text.find("\n", pos + _PIECE_BYTES) + 1 or len(text)  # a piece of whole lines
        out += _WANTED.findall(text, pos, end)
        pos = end
    return out


def fetch_page(url: str, deadline_s: float, max_bytes: int = MAX_PAGE_BYTES) -> bytes:
    """The body at ``url``, read in pieces for at most ``deadline_s`` in all and ``max_bytes``.

    Each socket read also waits at most ``deadline_s``, so a target that stops sending is
    abandoned at most that long after the deadline.
    """
    end_s = time.monotonic() + deadline_s
    with urllib.request.urlopen(url, timeout=deadline_s) as resp:  # a configured URL
        declared = resp.headers.get("Content-Length", "")
        if declared.isdigit() and int(declared) > max_bytes:
            raise PageTooLarge("too_large")
        body = bytearray()
        while piece := resp.read1(_PIECE_BYTES):
            body += piece
            if len(body) > max_bytes:
                raise PageTooLarge("too_large")
            if time.monotonic() > end_s:
                raise TimeoutError(f"page not read within {deadline_s} s")
    return bytes(body)


def scrape(url: str, deadline_s: float) -> Scrape:
    """Fetch and parse one page (on the scraper's worker thread, never the loop)."""
    before = time.time()
    page = fetch_page(url, deadline_s)
    after = time.time()
    rejected: Counter[str] = Counter()
    values = parse_metrics(page.decode("utf-8", "replace"), rejected)
    return Scrape(before, after, values, rejected)
