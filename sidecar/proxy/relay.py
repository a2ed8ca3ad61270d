"""What the proxy does to each upstream SSE event of a completion: learn, strip, add energy.

:class:`StreamRelay` is the pure part of streaming (no sockets): given each
event as framed by :class:`~sidecar.proxy.sse.SseFramer`, it records the
chunk's time on the request's trace and returns the bytes to send on:

* a content chunk: its time is recorded (one token), the bytes go on unchanged;
* a usage chunk: its token counts are recorded; a usage-only chunk
  (``choices: []``) that the proxy asked for on the client's behalf is dropped
  (the client never asked for it); any other gets the ``energy`` object (unless it is
  nested too deep for :mod:`json` to re-encode: then as it came, ``answer_too_deep``);
* anything else (role-only chunks, ``[DONE]``, comments, keep-alives): unchanged;
* malformed events (``data`` that is not JSON): unchanged, and counted.

Per-chunk cost: JSON is decoded only where it is needed. A chunk whose bytes look
like one JSON object (``{...}``) with no ``usage`` or ``logprobs`` (or null ones) and
no ``model`` still to learn is a plain content-or-not chunk: it goes on unchanged and
:data:`CONTENT` (a byte pattern for a truthy ``content``, ``reasoning_content``,
``tool_calls`` or ``function_call``, or a non-empty ``text``) says whether it
carried output, as :func:`is_content_chunk` says for decoded chunks (a test
holds the two to agree). Everything else (the first chunk that names the model,
usage chunks, chunks with logprobs, anything that does not look like a JSON object)
is decoded.
A chunk that looks like an object but is not valid JSON is then passed on without
being counted as malformed: the count covers what the bytes already give away.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from sidecar.proxy import jsonio
from sidecar.proxy.learn import Counts, RequestTrace, clean_label, usage_tokens
from sidecar.proxy.sse import DONE, SseEvent, read_data, with_data

__all__ = ["CONTENT", "StreamRelay", "is_content_chunk", "needs_decoding"]

_DELTA_KEYS = ("content", "reasoning_content", "tool_calls", "function_call")
# an output field with a truthy value, by its bytes (a JSON string's own quotes are escaped,
# so a key's quotes are never part of a value): a delta's non-empty string, list or object,
# true or a non-zero number; a completion's non-empty text
CONTENT = re.compile(
    rb'"(?:content|reasoning_content|tool_calls|function_call)"\s*:\s*'
    rb'(?:"(?!")|\[\s*[^\]\s]|\{\s*[^}\s]|true|-?(?:0*[1-9]|0\.0*[1-9]))'
    rb'|"text"\s*:\s*"(?!")'
)
# keys whose value, unless null, takes a decode: usage (learned, energy added), logprobs
# (its own "content" list would read as output)
_DECODE = re.compile(rb'"(?:usage|logprobs)"\s*+:\s*+(?!null)')


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


def needs_decoding(data: bytes, model_known: bool) -> bool:
    """False for a chunk the byte pattern can read (see the module docstring)."""
    if data[:1] != b"{" or data[-1:] != b"}":
        return True
    if not model_known and b'"model"' in data:
        return True
    return _DECODE.search(data) is not None


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
        self._model_read = False  # the first decoded chunk's model has been read (once a stream)

    def relay(self, event: SseEvent) -> bytes:
        """The bytes to send on for ``event`` (empty when it is dropped)."""
        data = event.data
        if data is None:
            return event.raw
        if not needs_decoding(data, self._model_read):
            if CONTENT.search(data):
                self._chunk()
            return event.raw
        doc, strict = read_data(data)
        if doc is None:
            self.counts.add("malformed_sse")
            return event.raw
        if doc == DONE or isinstance(doc, str):
            return event.raw
        if is_content_chunk(doc):
            self._chunk()
        if not self._model_read and "model" in doc:
            self._model_read = True
            self.trace.response_model = clean_label(doc["model"], "response_model", self.counts)
        usage = doc.get("usage")
        if usage is None:
            return event.raw
        return self._usage(doc, usage, data, event.raw, strict)

    def _chunk(self) -> None:
        now = self.clock()
        share = 1.0 / max(self.in_flight(), 1)
        trace = self.trace
        trace.shared_s += max(now - self._last_s, 0.0) * share
        trace.shared_steps += share
        trace.add_chunk(now)
        trace.changed()
        self._last_s = now

    def _usage(self, doc: dict[str, Any], usage: object, data: bytes, raw: bytes, strict: bool) -> bytes:
        """Usage learned; the chunk dropped, or passed on with the energy: spliced into ``data``
        when orjson read it (``strict``) and it is one line, else ``data`` re-encoded by :mod:`json`
        (an event nested too deep for that goes on as it came, ``raw``, without the energy)."""
        tokens = usage_tokens(usage, self.counts)
        if tokens is not None:
            self.trace.usage = tokens
            self.trace.changed()
        if self.strip_usage and not doc.get("choices"):
            return b""  # the usage-only chunk the client did not ask for
        energy = self.energy(self.trace)
        one_line = b"\n" not in data and b"\r" not in data  # one data line: the splice keeps it one
        try:
            with_energy = jsonio.set_member(data, doc, strict, "energy", energy, splice=one_line)
        except ValueError:  # nested too deep for json to re-encode: the event as it came
            self.counts.add("answer_too_deep")
            return raw
        return with_data(raw, with_energy)
