"""The request infos the vLLM plugin's rows make: a finished request, and those a restart ended.

Both are stateless: the receiver (:class:`~sidecar.taps.vllm_plugin.PluginReceiver`) decides
when a request ended and hands over what it knows. Units: seconds, tokens.
"""

from __future__ import annotations

from collections.abc import Iterable

from sidecar.attribution.events import WORK_LOST, RequestInfo
from sidecar.taps.vllm_plugin_rows import FinishRow
from sidecar.taps.vllm_span_format import operation_of

__all__ = ["aborted_infos", "finished_info"]


def finished_info(
    row: FinishRow, model: str, start_s: float, end_s: float, *, work_lost: bool
) -> RequestInfo:
    """A ``fin`` row's request: tokens, start (arrival), end, vLLM's id and finish reason; marked
    ``work_lost`` when it was decoding while a datagram was lost (its energy is short)."""
    attributes = {"vllm.request_id": row.raw_id, "finish_reason": row.reason}
    if work_lost:
        attributes[WORK_LOST] = "true"
    return RequestInfo(
        row.request_id,
        model=model,
        operation=operation_of(row.raw_id),
        start_s=start_s,
        end_s=end_s,
        prompt_tokens=row.prompt_tokens,
        output_tokens=row.generation_tokens,
        attributes=attributes,
    )


def aborted_infos(decoding: Iterable[tuple[str, int, int]], model: str, end_s: float) -> list[RequestInfo]:
    """The requests a restarted or silent vLLM process had in flight, as (id, prompt tokens, tokens
    generated): ended at ``end_s`` as aborted (the prefill's token plus one per decode step)."""
    return [
        RequestInfo(
            request_id,
            model=model,
            end_s=end_s,
            prompt_tokens=prompt,
            output_tokens=generated,
            attributes={"finish_reason": "abort", "aborted_on": "vllm_restart"},
        )
        for request_id, prompt, generated in decoding
    ]
