"""A checked vLLM request span's fields, and the :class:`RequestInfo` made of them.

The handler (:class:`~sidecar.taps.vllm_spans.VllmSpanHandler`) makes one per span; a span
without a task yet is remembered by its trace id as (request id, when handled) only, for
``vllm_task_wait_s``: a client span that comes in time names the task by that id (a
:class:`~sidecar.attribution.task_labels.TaskLabel`; the info went out already). Units:
seconds, tokens.
"""

from __future__ import annotations

from typing import NamedTuple

from sidecar.attribution.events import RequestInfo
from sidecar.taps.vllm_span_format import CHAT, operation_of

__all__ = ["CheckedSpan"]


class CheckedSpan(NamedTuple):
    """A checked request span: a tuple (cheap to make per span) until :meth:`info` makes the
    request's info."""

    request_id: str
    raw_id: str  # "" for the usual "chatcmpl-<request_id>" (not kept twice)
    model: str
    start_s: float
    end_s: float
    prompt_tokens: int
    output_tokens: int

    def info(self, trace_id: str, task: str) -> RequestInfo:
        raw_id = self.raw_id or CHAT + self.request_id
        return RequestInfo(  # positional (half the cost of keywords, made once per span): the field order
            self.request_id,  # request_id
            self.model,  # model
            operation_of(raw_id),  # operation
            task,  # task
            self.start_s,  # start_s
            self.end_s,  # end_s
            self.prompt_tokens,  # prompt_tokens
            self.output_tokens,  # output_tokens
            0.0,  # output_units
            "token",  # unit
            {"vllm.request_id": raw_id, "trace_id": trace_id},  # attributes
        )
