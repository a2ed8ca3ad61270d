"""The request ids of a batch of vLLM's ``llm_request`` spans, checked together.

Each span's id attribute is checked as :func:`~sidecar.taps.vllm_span_format.checked_id` checks
one (vLLM's id a printable string of 1..``MAX_ID_CHARS`` characters, the client's id it names
1..``max_id_chars``), on arrival (the receiver's ``check_rows``) and again when the tick takes
the spans. One id at a time that was two Python calls with their checks a span, twice. Here the
usual batch (every id a string, none empty or too long, all printable) is checked in a few passes
over the whole list: one ``isprintable`` over the ids joined (a string is printable exactly when
each of its characters is), their lengths at once. A batch with any id that fails is checked id
by id, so each id is refused for its own reason, exactly as before.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Sequence
from operator import itemgetter
from typing import cast

from sidecar.contracts.scheduler_wire import MAX_ID_CHARS
from sidecar.contracts.vllm_ids import CHAT, normalize_request_id
from sidecar.recent_ids_sorted import SortedRecentIds
from sidecar.taps import validate as v
from sidecar.taps.vllm_span_format import named_id

__all__ = ["checked_rows", "named_ids"]

log = logging.getLogger(__name__)

_CHAT_N = len(CHAT)
_HEAD = itemgetter(slice(0, _CHAT_N))  # an id's first characters, where a chat's prefix is


def named_ids(raws: Sequence[object]) -> list[tuple[str, str] | Exception]:
    """:func:`~sidecar.taps.vllm_span_format.named_id` of each of ``raws``: (vLLM's id, the
    request id it names), or why the id is refused."""
    named = _all_good(raws)
    if named is None:
        return [named_id(raw) for raw in raws]
    return list(zip(cast("Sequence[str]", raws), named, strict=True))


def _all_good(raws: Sequence[object]) -> list[str] | None:
    """The request ids ``raws`` name if every one of them passes both checks; else None."""
    if not raws or set(map(type, raws)) != {str}:  # a str subclass too: the exact way
        return None
    ids = cast("Sequence[str]", raws)
    lengths = list(map(len, ids))
    if min(lengths) < 1 or max(lengths) > MAX_ID_CHARS or not "".join(ids).isprintable():
        return None
    if min(lengths) > _CHAT_N and set(map(_HEAD, ids)) == {CHAT}:
        named = [raw[_CHAT_N:] for raw in ids]  # chats, the usual batch: normalize_request_id's cut
    else:
        named = list(map(normalize_request_id, ids))
    limit = v.LIMITS.max_id_chars
    if min(map(len, named)) < 1 or max(map(len, named)) > limit:  # printable: parts of printable ids
        return None
    return named


def checked_rows(
    ids: Sequence[object], handled: SortedRecentIds[str], codes: list[int], counts: Counter[str]
) -> list[tuple[int, str, str]]:
    """The rows whose id (``ids``, the spans' id attributes) names a request not ``handled`` before
    nor earlier in the batch, and whose numbers passed (``codes``: 0, else ``1 +`` the index of the
    first reason in :data:`~sidecar.taps.validate.REASONS`): (row, vLLM's id, request id); the
    others counted in ``counts`` by why (the id first, then a duplicate, then the numbers)."""
    named = named_ids(ids)
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
