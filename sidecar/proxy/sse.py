"""Server-sent events, framed as they arrive, without holding a stream.

:class:`SseFramer` takes the upstream body in whatever pieces the network
delivers and returns each complete event (ending in a blank line) as soon as
its last byte is in: its exact bytes, to forward unchanged, and its ``data``
payload (bytes, never decoded here), to learn from. Nothing waits for more
than one event. A partial event longer than ``max_event_bytes`` (an upstream
that never sends a blank line) is handed on raw and counted as malformed, so a
broken upstream cannot make the proxy hold its stream.

This is the proxy's per-chunk hot path, so the common case is cheap: a stream
with ``\\n`` line ends only (every engine we know) is cut with ``bytes.find``,
and an event of one ``data:`` line has its payload sliced out; ``\\r`` line ends
(allowed by the SSE spec) take the general path with the same result.

Events whose ``data`` is not a JSON object (besides OpenAI's ``[DONE]``) are
still forwarded unchanged; :func:`parse_data` says what they were.
"""

from __future__ import annotations

import re
from typing import Any, NamedTuple

from sidecar.proxy import jsonio

__all__ = ["DONE", "SseEvent", "SseFramer", "parse_data", "read_data", "with_data"]

DONE = "[DONE]"
_BOUNDARY = re.compile(rb"\r\n\r\n|\n\n|\r\r")
_LINE_END = re.compile(rb"\r\n|\n|\r")
_LINE = re.compile(rb"([^\r\n]*)(" + _LINE_END.pattern + rb"|$)")  # a line and its end


class SseEvent(NamedTuple):
    """One event: its bytes as received (boundary included) and its joined ``data`` lines."""

    raw: bytes
    data: bytes | None  # None: no data field (a comment, a keep-alive) or not an event at all


def _data_of(block: bytes, lines: list[bytes]) -> bytes | None:
    """The ``data`` lines of one event's ``lines``, joined by ``\\n`` (``block`` is their source)."""
    if block.startswith(b"data:") and len(lines) == 1:  # the common case: one data line
        value = block[5:]
        return value[1:] if value.startswith(b" ") else value
    found = [
        (line[6:] if line.startswith(b"data: ") else line[5:]) for line in lines if line.startswith(b"data:")
    ]
    return b"\n".join(found) if found else None


def _lf_data(block: bytes) -> bytes | None:
    if block.startswith(b"data:") and b"\n" not in block:
        return _data_of(block, [block])
    return _data_of(block, block.split(b"\n"))


def _any_data(block: bytes) -> bytes | None:
    return _data_of(block, _LINE_END.split(block))


class SseFramer:
    """Splits a byte stream into SSE events (see the module docstring)."""

    def __init__(self, max_event_bytes: int = 1 << 20) -> None:
        self.max_event_bytes = max_event_bytes
        self._buffer = bytearray()  # the event begun: appended to in place
        self._scanned = 0  # no boundary ends within the buffer's first this many bytes
        self._cr = False  # a \r in the buffer: the general path
        self.oversized = 0  # partial events handed on raw because they grew past the limit

    def feed(self, piece: bytes) -> list[SseEvent]:
        """The events completed by ``piece`` (possibly none). Each byte is scanned about once: the
        search for a boundary starts where the last one stopped (less a boundary's length), so an
        event trickled in small pieces costs time linear in its size (the buffer was joined to
        each piece and searched from its start: quadratic; ``benchmarks/hostile_cost.py``, "sse
        trickle")."""
        buf = self._buffer
        buf += piece
        self._cr = self._cr or b"\r" in piece
        out: list[SseEvent] = []
        start, since = 0, max(self._scanned - 3, 0)  # a boundary is at most 4 bytes
        if not self._cr:
            end = buf.find(b"\n\n", since)
            while end >= 0:
                block = bytes(buf[start:end])
                out.append(SseEvent(block + b"\n\n", _lf_data(block)))
                start = end + 2
                end = buf.find(b"\n\n", start)
        else:
            for match in _BOUNDARY.finditer(buf, since):
                raw = bytes(buf[start : match.end()])
                out.append(SseEvent(raw, _any_data(raw[: match.start() - start])))
                start = match.end()
        if start:
            del buf[:start]
            self._cr = self._cr and b"\r" in buf
        if len(buf) > self.max_event_bytes:
            self.oversized += 1
            out.append(SseEvent(bytes(buf), None))
            buf.clear()
            self._cr = False
        self._scanned = len(buf)
        return out

    def close(self) -> list[SseEvent]:
        """What is left when the stream ends (an unterminated last event), as one raw event."""
        rest = bytes(self._buffer)
        self._buffer.clear()
        self._scanned, self._cr = 0, False
        return [SseEvent(rest, _any_data(rest))] if rest else []


def with_data(raw: bytes, payload: bytes) -> bytes:
    """The event ``raw`` with its data line(s) as one line of ``payload``: its other fields (``id:``,
    ``event:``, comments) and line ends kept (the proxy's usage event went on as ``data: ...\n\n``
    alone: an EventSource dispatched it as another event type and resumed from another
    Last-Event-ID)."""
    out: list[bytes] = []
    placed = False
    for match in _LINE.finditer(raw):
        line, end = match.group(1), match.group(2)
        if not line and not end:  # the end of the text
            break
        if line.startswith(b"data:"):
            if not placed:
                out.append(b"data: " + payload + (end or b"\n"))
                placed = True
            continue
        out.append(line + end)
    return b"".join(out) if placed else b"data: " + payload + b"\n\n"


def parse_data(data: bytes | str | None) -> dict[str, Any] | str | None:
    """An event's payload: a JSON object, :data:`DONE`, or ``None`` when it is neither."""
    return read_data(data)[0]


def read_data(data: bytes | str | None) -> tuple[dict[str, Any] | str | None, bool]:
    """:func:`parse_data`, and whether orjson read the payload (:func:`~sidecar.proxy.jsonio.read`)."""
    if data is None:
        return None, False
    if data.strip() in (DONE, b"[DONE]"):
        return DONE, False
    try:
        value, strict = jsonio.read(data)
    except ValueError:  # UnicodeDecodeError included
        return None, False
    return (value, strict) if isinstance(value, dict) else (None, False)
