"""What the proxy does to each upstream SSE event of a completion: learn, strip, add energy.

:class:`StreamRelay` is the pure part of streaming (no sockets): given each
event as framed by :class:`~sidecar.proxy.sse.SseFramer`, it records the
chunk's time on the request's trace and returns the bytes to send on:

* a content chunk: its time is recorded (one token), the bytes go on unchanged;
* a usage chunk: its token counts are recorded; a usage-only chunk
  (``choices: []``) that the proxy asked for on the client's behalf is dropped
  (the client never asked for it); any other gets the ``energy`` object;
* anything else (role-only chunks, ``[DONE]``, comments, keep-alives): unchanged;
* malformed events (``data`` that is not JSON): unchanged, and counted.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from sidecar.proxy.learn import Counts, RequestTrace, clean_label, usage_tokens
from sidecar.proxy.sse import DONE, SseEvent, parse_data

__all__ = ["StreamRelay", "is_content_chunk"]

_DELTA_KEYS = ("content", "reasoning_content", "tool_calls", "function_call")


def is_content_chunk(doc: dict[str, Any]) -> bool:
    """True if a chunk carries output (a delta's text / tool call, or a completion's text)."""
    choices = doc.get("choices")
    if not isinstance(choices, list):
        return False
    for choice in choices:
        if not isinstance(choice, dict):
            continue
        delta = choice.get("delta")
        if isinstance(delta, dict) and any(delta.get(k) for k in _DELTA_KEYS):
            return True
        if isinstance(choice.get("text"), str) and choice["text"]:
            return True
    return False


def _sse(doc: dict[str, Any]) -> bytes:
    return b"data: " + json.dumps(doc, separators=(",", ":")).encode() + b"\n\n"


class StreamRelay:
    """Relays one completion's events (see the module docstring)."""

    def __init__(
        self,
        trace: RequestTrace,
        *,
        strip_usage: bool,
        clock: Callable[[], float],
        in_flight: Callable[[], int],
        energy: Callable[[RequestTrace], dict[str, Any]],
        counts: Counts,
    ) -> None:
        self.trace = trace
        self.strip_usage = strip_usage
        self.clock = clock
        self.in_flight = in_flight
        self.energy = energy
        self.counts = counts
        self._last_s = trace.arrival_s

    def relay(self, event: SseEvent) -> bytes:
        """The bytes to send on for ``event`` (empty when it is dropped)."""
        doc = parse_data(event.data)
        if doc is None:
            if event.data is not None:
                self.counts.add("malformed_sse")
            return event.raw
        if doc == DONE or isinstance(doc, str):
            return event.raw
        if is_content_chunk(doc):
            self._chunk()
        if self.trace.response_model is None:
            self.trace.response_model = clean_label(doc.get("model"), "response_model", self.counts)
        usage = doc.get("usage")
        if usage is None:
            return event.raw
        return self._usage(doc, usage)

    def _chunk(self) -> None:
        now = self.clock()
        share = 1.0 / max(self.in_flight(), 1)
        trace = self.trace
        trace.shared_s += max(now - self._last_s, 0.0) * share
        trace.shared_steps += share
        trace.chunk_s.append(now)
        self._last_s = now

    def _usage(self, doc: dict[str, Any], usage: object) -> bytes:
        tokens = usage_tokens(usage, self.counts)
        if tokens is not None:
            self.trace.usage = tokens
        if self.strip_usage and not doc.get("choices"):
            return b""  # the usage-only chunk the client did not ask for
        doc["energy"] = self.energy(self.trace)
        return _sse(doc)
