"""Work events from a proxied request's chunk timing, so no spans are needed.

A streamed completion is read as the engine made it:

* **prefill** from arrival to the first content chunk, ``prompt_tokens`` units,
  one step, causal attention ``p (p + 1) / 2`` query-key pairs;
* **decode**, one token per later chunk, each from the previous chunk to this
  one, one step, attending over ``p + i`` tokens of context.

The prompt's token count comes from the upstream's ``usage`` chunk (the proxy
asks for it). That arrives only at the end, so the prefill event (and the
decodes after it, which need ``p``) waits for it, but never longer than
``hold_s`` after the first token: past that the count is estimated from the
prompt's characters (4 per token) and the request is marked
``prompt_tokens_estimated``. ``hold_s`` stays below the sidecar's ``settle_s``
so the work lands before its ticks are sealed.

A non-streamed completion has no chunks: its work is known only at the end,
split as one prefill step then one decode step per further output token, of
equal length. Such a request longer than ``settle_s`` has its early part
clipped by the attributor (counted as ``late_clipped``; its record's energy is
marked unknown, ``work_lost``); stream for accuracy. So is a stream that ended
without a content chunk: the path follows what the upstream answered, not what
the client asked (an engine that answers ``stream: true`` with one plain JSON
completion made no chunk, and read as a stream its record was a final 0 J).
"""

from __future__ import annotations

from dataclasses import dataclass

from sidecar.attribution.events import PROMPT_ESTIMATED, WORK_LOST, Phase, RequestInfo, WorkEvent
from sidecar.contracts import span_attributes as attr
from sidecar.proxy.learn import RequestTrace

__all__ = ["CHARS_PER_TOKEN", "TraceCursor", "request_info"]

CHARS_PER_TOKEN = 4.0


def _prefill(request_id: str, t0_s: float, t1_s: float, p: int) -> WorkEvent:
    return WorkEvent(request_id, t0_s, t1_s, Phase.PREFILL, float(p), 1.0, p * (p + 1) / 2.0)


@dataclass(slots=True)
class TraceCursor:
    """How much of one trace has been handed to attribution."""

    trace: RequestTrace
    prompt_tokens: int | None = None  # fixed when the prefill event is made
    estimated: bool = False
    chunks_done: int = 0  # chunks turned into events (the first one is prefill's)

    def _prompt(self, now_s: float, hold_s: float) -> int | None:
        trace = self.trace
        if self.prompt_tokens is not None:
            return self.prompt_tokens
        if trace.usage is not None:
            self.prompt_tokens = trace.usage[0]
        elif trace.done or (trace.first_token_s is not None and now_s - trace.first_token_s >= hold_s):
            self.prompt_tokens = max(round(trace.prompt_chars / CHARS_PER_TOKEN), 1)
            self.estimated = True
        return self.prompt_tokens

    def drain(self, now_s: float, hold_s: float) -> list[WorkEvent]:
        """The events this trace has made since the last drain."""
        trace = self.trace
        if trace.stream and (trace.chunk_s or not trace.done):  # ended without a chunk: read whole
            return self._drain_stream(now_s, hold_s)
        if not trace.done or trace.end_s is None or self.prompt_tokens is not None:
            return []
        return self._whole(trace.end_s, self._prompt(now_s, hold_s) or 1)

    def _drain_stream(self, now_s: float, hold_s: float) -> list[WorkEvent]:
        trace = self.trace
        n = len(trace.chunk_s)  # a prefix: the forwarder only appends
        first = trace.first_token_s
        if n == 0 or first is None:
            return []
        had_prompt = self.prompt_tokens is not None
        p = self._prompt(now_s, hold_s)
        if p is None:
            return []
        out = [] if had_prompt else [_prefill(trace.request_id, trace.arrival_s, first, p)]
        start = max(self.chunks_done, 1)
        for i in range(start, n):
            t0, t1 = trace.chunk_s[i - 1], trace.chunk_s[i]
            out.append(WorkEvent(trace.request_id, t0, t1, Phase.DECODE, 1.0, 1.0, float(p + i)))
        self.chunks_done = max(n, 1)
        return out

    def _whole(self, end_s: float, p: int) -> list[WorkEvent]:
        trace = self.trace
        out_tokens = trace.usage[1] if trace.usage is not None else 0
        step_s = (end_s - trace.arrival_s) / max(out_tokens, 1)
        split_s = trace.arrival_s + step_s
        events = [_prefill(trace.request_id, trace.arrival_s, split_s, p)]
        if out_tokens > 1:
            decode_ctx = (out_tokens - 1) * p + out_tokens * (out_tokens - 1) / 2.0
            events.append(
                WorkEvent(
                    trace.request_id,
                    split_s,
                    end_s,
                    Phase.DECODE,
                    float(out_tokens - 1),
                    float(out_tokens - 1),
                    decode_ctx,
                )
            )
        return events


def request_info(cursor: TraceCursor, default_model: str) -> RequestInfo:
    """What attribution keeps about the request (``end_s`` set once it is done)."""
    trace = cursor.trace
    prompt = trace.usage[0] if trace.usage is not None else (cursor.prompt_tokens or 0)
    output = trace.usage[1] if trace.usage is not None else len(trace.chunk_s)
    attributes = {attr.REQUEST_STATUS: trace.outcome, "jouletrace.tap": "proxy"}
    if trace.tenant is not None:
        attributes[attr.TENANT] = trace.tenant
    if trace.traceparent is not None:
        attributes["trace_id"] = trace.traceparent.split("-")[1]
    if cursor.estimated and trace.usage is None:
        attributes[PROMPT_ESTIMATED] = "true"
    if trace.work_lost:
        attributes[WORK_LOST] = "true"
    return RequestInfo(
        request_id=trace.request_id,
        model=trace.response_model or trace.model or default_model,
        operation="chat" if trace.path.endswith("chat/completions") else "text_completion",
        task=trace.task or "unknown",
        start_s=trace.arrival_s,
        end_s=trace.end_s if trace.done else None,
        prompt_tokens=prompt,
        output_tokens=output,
        attributes=attributes,
    )
