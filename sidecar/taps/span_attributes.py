"""The attributes of a request from vLLM's ``llm_request`` span: two values in a small object.

Every request a span brings carries two attributes to its record: ``vllm.request_id`` (the id vLLM
gave it) and ``trace_id`` (its trace, to find the spans of the request). As a ``dict`` that was 184
bytes a request, and the trace id's hex text 81 more, held from the span to the record (a flood
holds tens of thousands of requests at once). :class:`SpanAttributes` is a read-only mapping of
the same two keys: vLLM's id as the request's own id (which the request holds anyway) between a
prefix and a suffix that are shared constants (``chatcmpl-`` and none, for a chat; the whole id
where vLLM's id is of no form :func:`~sidecar.contracts.vllm_ids.normalize_request_id` knows), and
the trace id as the span's 16 bytes (which the decoder made already), written as hex when read.
The record gets a plain ``dict`` of it (:mod:`sidecar.attribution.final_records` copies a
request's attributes), so nothing downstream sees the difference; it compares equal to the dict
it stands for.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

from sidecar.contracts.vllm_ids import CHAT, NUMBERED

__all__ = ["SpanAttributes"]

_KEYS = ("vllm.request_id", "trace_id")
_HEADS = {head: head for head in ("", CHAT, *NUMBERED)}  # vLLM's prefixes, one string each
_TAILS = ("", "-0", "_0")  # a completion's first prompt, a response's first turn
_CHAT_N = len(CHAT)


def _affixes(raw_id: str, request_id: str) -> tuple[str, str] | None:
    """A shared prefix and suffix that make ``raw_id`` around ``request_id``; None if there are none."""
    n, m = len(raw_id), len(request_id)
    for tail in _TAILS:
        at = n - m - len(tail)
        if at >= 0 and raw_id.endswith(tail) and raw_id.startswith(request_id, at):
            head = _HEADS.get(raw_id[:at])
            if head is not None:
                return head, tail
    return None


class SpanAttributes(Mapping[str, str]):
    """``{"vllm.request_id": raw_id, "trace_id": trace}`` of a request ``request_id`` (its id as
    the sidecar names it), ``trace`` given as bytes (read as hex) or text."""

    __slots__ = ("_head", "_id", "_tail", "_trace")

    def __init__(self, raw_id: str, request_id: str, trace: bytes | str) -> None:
        self._trace = trace
        if (
            len(raw_id) == len(request_id) + _CHAT_N
            and raw_id.startswith(CHAT)
            and raw_id.endswith(request_id)
        ):
            self._head, self._id, self._tail = CHAT, request_id, ""  # a chat's, the usual one
            return
        affixes = _affixes(raw_id, request_id)
        if affixes is None:
            self._head, self._id, self._tail = "", raw_id, ""
        else:
            (self._head, self._tail), self._id = affixes, request_id

    def as_dict(self) -> dict[str, str]:
        """The dict it stands for (what a record keeps), made at C speed: ``dict()`` of a mapping
        asks for each value in turn."""
        trace = self._trace
        return {
            "vllm.request_id": f"{self._head}{self._id}{self._tail}",
            "trace_id": trace if isinstance(trace, str) else trace.hex(),
        }

    def __getitem__(self, key: str) -> str:
        if key not in _KEYS:
            raise KeyError(key)
        return self.as_dict()[key]  # one value read alone is rare (a merge of infos): made with both

    def get(self, key: str, default: Any = None) -> Any:
        """``Mapping.get`` without its ``KeyError``: the attribution asks every request's
        attributes for a key these never hold (``work_lost``), and a raised and caught error
        cost ten times a dict's look-up."""
        return self.as_dict()[key] if key in _KEYS else default

    def __iter__(self) -> Iterator[str]:
        return iter(_KEYS)

    def __len__(self) -> int:
        return 2

    def __contains__(self, key: object) -> bool:
        return key in _KEYS

    def __repr__(self) -> str:
        return repr(dict(self))
