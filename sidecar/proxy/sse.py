"""Server-sent events, framed as they arrive, without holding a stream.

:class:`SseFramer` takes the upstream body in whatever pieces the network
delivers and returns each complete event (ending in a blank line) as soon as
its last byte is in: its exact bytes, to forward unchanged, and its ``data``
payload, to learn from. Nothing waits for more than one event. A partial event
longer than ``max_event_bytes`` (an upstream that never sends a blank line) is
handed on raw and counted as malformed, so a broken upstream cannot make the
proxy hold its stream.

Events whose ``data`` is not a JSON object (besides OpenAI's ``[DONE]``) are
still forwarded unchanged; :func:`parse_data` says what they were.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

__all__ = ["DONE", "SseEvent", "SseFramer", "parse_data"]

DONE = "[DONE]"
_BOUNDARY = re.compile(rb"\r\n\r\n|\n\n|\r\r")


@dataclass(frozen=True, slots=True)
class SseEvent:
    """One event: its bytes as received (boundary included) and its joined ``data`` lines."""

    raw: bytes
    data: str | None  # None: no data field (a comment, a keep-alive) or not an event at all


def _data_of(block: bytes) -> str | None:
    lines: list[str] = []
    for line in re.split(rb"\r\n|\n|\r", block):
        if line.startswith(b"data:"):
            value = line[5:]
            lines.append((value[1:] if value.startswith(b" ") else value).decode("utf-8", "replace"))
    return "\n".join(lines) if lines else None


class SseFramer:
    """Splits a byte stream into SSE events (see the module docstring)."""

    def __init__(self, max_event_bytes: int = 1 << 20) -> None:
        self.max_event_bytes = max_event_bytes
        self._buffer = b""
        self.oversized = 0  # partial events handed on raw because they grew past the limit

    def feed(self, piece: bytes) -> list[SseEvent]:
        """The events completed by ``piece`` (possibly none)."""
        buffer = self._buffer + piece
        out: list[SseEvent] = []
        start = 0
        for match in _BOUNDARY.finditer(buffer):
            block = buffer[start : match.start()]
            out.append(SseEvent(buffer[start : match.end()], _data_of(block)))
            start = match.end()
        rest = buffer[start:]
        if len(rest) > self.max_event_bytes:
            self.oversized += 1
            out.append(SseEvent(rest, None))
            rest = b""
        self._buffer = rest
        return out

    def close(self) -> list[SseEvent]:
        """What is left when the stream ends (an unterminated last event), as one raw event."""
        rest, self._buffer = self._buffer, b""
        return [SseEvent(rest, _data_of(rest))] if rest else []


def parse_data(data: str | None) -> dict[str, Any] | str | None:
    """An event's payload: a JSON object, :data:`DONE`, or ``None`` when it is neither."""
    if data is None:
        return None
    if data.strip() == DONE:
        return DONE
    try:
        value = json.loads(data)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None
