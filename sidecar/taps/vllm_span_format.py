"""vLLM's ``llm_request`` span as this sidecar reads it: its name, attributes and request ids.

What :class:`~sidecar.taps.vllm_spans.VllmSpanHandler` (and the plugin and hook
taps, for ids) need to know about vLLM's span format: the attribute names vLLM
sets (``vllm/tracing/utils.py``, pinned by a contract test against the installed
vLLM), how its request ids map to the client's (:func:`normalize_request_id`, from
:mod:`sidecar.contracts.vllm_ids`),
and the columns the OTLP receiver decodes for it (:data:`ROW_SPEC`; a whole
span as one such row: :func:`one_row`). Units: seconds, tokens.
"""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np

from sidecar.contracts.scheduler_wire import MAX_ID_CHARS
from sidecar.contracts.vllm_ids import CHAT, NUMBERED, RESPONSES, normalize_request_id
from sidecar.taps import validate as v
from sidecar.taps.span_rows import RowSpec
from sidecar.taps.spans import ReceivedSpan, SpanRows

__all__ = [
    "CHAT",
    "ID_KEY",
    "ROW_SPEC",
    "SPAN_ATTRIBUTES",
    "SPAN_NAME",
    "checked_id",
    "named_id",
    "normalize_request_id",
    "one_row",
    "operation_of",
    "vllm_id",
]

SPAN_NAME = "llm_request"
# The attribute names this handler reads (pinned by a contract test against the installed vLLM).
SPAN_ATTRIBUTES = {
    "request_id": "gen_ai.request.id",
    "prompt_tokens": "gen_ai.usage.prompt_tokens",
    "completion_tokens": "gen_ai.usage.completion_tokens",
    "queue_s": "gen_ai.latency.time_in_queue",
    "ttft_s": "gen_ai.latency.time_to_first_token",
    "e2e_s": "gen_ai.latency.e2e",
    "prefill_s": "gen_ai.latency.time_in_model_prefill",
    "decode_s": "gen_ai.latency.time_in_model_decode",
    "inference_s": "gen_ai.latency.time_in_model_inference",
}
# vLLM's id of a request is bounded with room for what it adds to the client's id (MAX_ID_CHARS), so
# an id of thousands of characters is refused before it is looked at; the client's id it names is
# bounded by the sidecar's limit (the id its record goes by and the API looks up)
_VLLM_ID_LIMITS = replace(v.LIMITS, max_id_chars=MAX_ID_CHARS)


def vllm_id(raw: object, what: str) -> str:
    """vLLM's id of a request, checked: printable, 1..``MAX_ID_CHARS`` characters (the client's id
    and what vLLM adds to it); the client's id it names is checked by :func:`checked_id`."""
    return v.request_id(raw, what, _VLLM_ID_LIMITS)


def checked_id(raw: object, what: str) -> tuple[str, str]:
    """vLLM's id of a request (:func:`vllm_id`) and the client's id it names
    (:func:`normalize_request_id`), at most ``max_id_chars`` characters: the limit is the client's,
    not that of vLLM's id (``chatcmpl-`` and 256 characters is a good id); else ``Rejected``."""
    raw_id = vllm_id(raw, what)
    return raw_id, v.request_id(normalize_request_id(raw_id), what)


def named_id(raw: object) -> tuple[str, str] | Exception:
    """A span's id attribute and the request id it names, checked (:func:`checked_id`); or why it
    is refused (:class:`~sidecar.taps.validate.Rejected`, or a bug's exception: the span handler
    counts it for that span alone)."""
    try:
        return checked_id(raw, ID_KEY)
    except Exception as err:  # raised again in the handler's loop, which counts it
        return err


def operation_of(raw: str) -> str:
    """The ``gen_ai.operation.name`` of a request by vLLM's id: chat, embeddings, pooling, else
    text_completion."""
    if raw.startswith((CHAT, RESPONSES)):  # the Responses API: a chat too
        return "chat"
    return next((op for prefix, op in NUMBERED.items() if raw.startswith(prefix)), "text_completion")


ID_KEY, _PROMPT, _COMPLETION, _E2E, _PREFILL, _DECODE = (
    SPAN_ATTRIBUTES[k]
    for k in ("request_id", "prompt_tokens", "completion_tokens", "e2e_s", "prefill_s", "decode_s")
)
ROW_SPEC = RowSpec(SPAN_NAME, ID_KEY, (_PROMPT, _COMPLETION, _E2E, _PREFILL, _DECODE))


def one_row(span: ReceivedSpan) -> SpanRows:
    """A whole span as one row of :data:`ROW_SPEC` (the handler checks both forms alike)."""
    values, kinds = [], []
    for key in ROW_SPEC.numeric_keys:
        x = span.attributes.get(key)
        if x is None:
            values.append(0.0)
            kinds.append(v.ABSENT)
        elif isinstance(x, bool) or not isinstance(x, int | float):
            values.append(0.0)
            kinds.append(v.NOT_A_NUMBER)
        else:
            try:
                values.append(float(x))
            except OverflowError:  # an integer too large for a float: not finite, as v.number says
                values.append(math.inf)
            kinds.append(v.A_NUMBER)
    return SpanRows(
        [b""],
        [b""],
        np.array([span.start_unix_s], dtype=np.float64),
        np.array([span.end_unix_s], dtype=np.float64),
        [span.attributes[ID_KEY]],
        np.array([values], dtype=np.float64),
        np.array([kinds], dtype=np.int8),
    )
