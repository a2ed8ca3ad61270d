"""The request ids of a batch of vLLM's ``llm_request`` spans, checked: refused by reason, or taken.

Each span's id attribute is checked as :func:`~sidecar.taps.vllm_span_format.checked_id` checks
one (vLLM's id a printable string of 1..``MAX_ID_CHARS`` characters, the client's id it names
1..``max_id_chars``), on arrival (the receiver's ``check_rows``) and again when the tick takes the
spans (:func:`checked_rows`, which also refuses a request handled before or twice in the batch).
Checking a batch's ids in a few passes over all of them (tried on 2026-12-06) moved neither the
receive's nor the span handler's CPU a span in ``ingest_grpc.py``'s stage split; not kept.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Sequence

from sidecar.recent_ids_sorted import SortedRecentIds
from sidecar.taps import validate as v
from sidecar.taps.vllm_span_format import named_id

__all__ = ["checked_rows"]

log = logging.getLogger(__name__)


def checked_rows(
    ids: Sequence[object], handled: SortedRecentIds[str], codes: list[int], counts: Counter[str]
) -> list[tuple[int, str, str]]:
    """The rows whose id (``ids``, the spans' id attributes) names a request not ``handled`` before
    nor earlier in the batch, and whose numbers passed (``codes``: 0, else ``1 +`` the index of the
    first reason in :data:`~sidecar.taps.validate.REASONS`): (row, vLLM's id, request id); the
    others counted in ``counts`` by why (the id first, then a duplicate, then the numbers)."""
    named = [named_id(raw) for raw in ids]  # (vLLM's id, request id), or why the id is refused
    known = handled.contains_many([n[1] if isinstance(n, tuple) else "" for n in named])
    taken: dict[str, None] = {}  # ids handled in this batch
    out: list[tuple[int, str, str]] = []
    for i, (name, seen, code) in enumerate(zip(named, known.tolist(), codes, strict=True)):
        try:
            if isinstance(name, Exception):
                raise name
            raw_id, request_id = name
            if seen or request_id in taken:
                raise v.Rejected("duplicate", f"llm_request span for {request_id!r} already handled")
            if code:
                raise v.Rejected(v.REASONS[code - 1], f"llm_request span for {request_id!r}")
        except v.Rejected as err:
            v.note(counts, err)
            continue
        except Exception:  # a bug must not cost the other spans: count, log, go on
            counts["internal_errors"] += 1
            log.exception("llm_request span %d of %d could not be checked", i, len(ids))
            continue
        taken[request_id] = None
        out.append((i, raw_id, request_id))
    return out
