"""A handled vLLM request span kept until a client span of its trace names its task.

The handler (:class:`~sidecar.taps.vllm_spans.VllmSpanHandler`) keeps these, in arrival
order, for ``vllm_task_wait_s``; a client span that comes in time turns one back into the
request's :class:`RequestInfo`, now with its task. Units: seconds, tokens.
"""

from __future__ import annotations

from typing import NamedTuple

from sidecar.attribution.events import RequestInfo
from sidecar.taps.vllm_span_format import CHAT

__all__ = ["WaitingSpan"]


class WaitingSpan(NamedTuple):
    """A handled request span kept for a client span of its trace to add the task: a tuple, not its
    RequestInfo (whose attributes dict alone was ~200 of its ~550 bytes). Kept at most
    ``task_wait_s`` after it arrived (``kept_s``: one float shared by a batch), and at most
    ``_MAX_WAITING`` (:mod:`.vllm_spans`) of them."""

    request_id: str
    raw_id: str  # "" for the usual "chatcmpl-<request_id>" (not kept twice)
    model: str
    start_s: float
    end_s: float
    prompt_tokens: int
    output_tokens: int
    kept_s: float  # time.monotonic() when it was handled

    def info(self, trace_id: str, task: str) -> RequestInfo:
        raw_id = self.raw_id or CHAT + self.request_id
        return RequestInfo(  # positional (half the cost of keywords, made once per span): the field order
            self.request_id,  # request_id
            self.model,  # model
            "chat" if raw_id.startswith(CHAT) else "text_completion",  # operation
            task,  # task
            self.start_s,  # start_s
            self.end_s,  # end_s
            self.prompt_tokens,  # prompt_tokens
            self.output_tokens,  # output_tokens
            0.0,  # output_units
            "token",  # unit
            {"vllm.request_id": raw_id, "trace_id": trace_id},  # attributes
        )
