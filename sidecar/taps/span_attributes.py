"""The attributes of a request from vLLM's ``llm_request`` span: two values in a small object.

Every request a span brings carries two attributes to its record: ``vllm.request_id`` (the id vLLM
gave it) and ``trace_id`` (its trace, to find the spans of the request). As a ``dict`` that was 184
bytes a request, and the trace id's hex text 81 more, held from the span to the record (a flood
holds tens of thousands of requests at once). :class:`SpanAttributes` is a read-only mapping of
the same two keys: the id as given and the trace id as the span's 16 bytes (which the decoder made
already), written as hex when read. The record gets a plain ``dict`` of it
(:mod:`sidecar.attribution.final_records` copies a request's attributes), so nothing downstream sees
the difference; it compares equal to the dict it stands for.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping

__all__ = ["SpanAttributes"]

_KEYS = ("vllm.request_id", "trace_id")


class SpanAttributes(Mapping[str, str]):
    """``{"vllm.request_id": raw_id, "trace_id": trace}``, ``trace`` given as bytes (read as hex) or text."""

    __slots__ = ("_raw_id", "_trace")

    def __init__(self, raw_id: str, trace: bytes | str) -> None:
        self._raw_id, self._trace = raw_id, trace

    def __getitem__(self, key: str) -> str:
        if key == "vllm.request_id":
            return self._raw_id
        if key == "trace_id":
            trace = self._trace
            return trace if isinstance(trace, str) else trace.hex()
        raise KeyError(key)

    def __iter__(self) -> Iterator[str]:
        return iter(_KEYS)

    def __len__(self) -> int:
        return 2

    def __contains__(self, key: object) -> bool:
        return key in _KEYS

    def __repr__(self) -> str:
        return repr(dict(self))
