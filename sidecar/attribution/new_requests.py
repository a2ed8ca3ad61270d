"""Whether a tick's infos from one source are all of requests first seen: the usual span export.

:meth:`~sidecar.attribution.engine.Attributor.add_requests` puts a run of infos of requests first
seen into the request table at once; the others go one by one (a request already live, a final
one, a task named by id, a label held, an end too far ahead, lost work). A span export's infos are
usually all first seen, and then the whole list is one run. :func:`first_seen` tells so with a few
C-speed passes over the list (a set of types, a set of ids, the table's ids as a set view, the
ends as an array), not a Python loop with six tests an info. It is only a shortcut: where it says
False, the loop decides each info as before.
"""

from __future__ import annotations

import math
from collections.abc import Container, Sequence, Set, Sized
from operator import attrgetter
from typing import Protocol, cast

import numpy as np

from sidecar.attribution.events import WORK_LOST, RequestInfo

__all__ = ["first_seen"]


class Held(Container[str], Sized, Protocol):
    """Ids of requests a label waits for (:class:`~sidecar.attribution.task_labels.HeldLabels`)."""


_END_S = attrgetter("end_s")
_ATTRIBUTES = attrgetter("attributes")


def first_seen(
    items: Sequence[object],
    ids: list[str],
    final: np.ndarray,
    live: Set[str],
    held: Held,
    latest_end_s: float,
) -> list[RequestInfo] | None:
    """``items`` as a list of infos if every one of them (ids ``ids``; ``final``: whether each id's
    record is final) is a :class:`RequestInfo` of a request neither live (``live``: the table's
    ids) nor named by a held label (``held``), no id twice, no end after ``latest_end_s`` (the
    sealed time plus ``max_future_s``; NaN: not too far, as the one-by-one test), no work lost;
    else None."""
    if not items or final.any() or set(map(type, items)) != {RequestInfo}:
        return None
    if len(set(ids)) != len(ids) or not live.isdisjoint(ids):
        return None
    if len(held) and any(map(held.__contains__, ids)):
        return None
    infos = cast("list[RequestInfo]", list(items))  # every one a RequestInfo: checked above
    if latest_end_s < math.inf:
        ends = [end for end in map(_END_S, infos) if end is not None]
        try:
            if ends and bool((np.asarray(ends, dtype=np.float64) > latest_end_s).any()):
                return None
        except (TypeError, ValueError, OverflowError):  # not a number: the loop decides
            return None
    lost = "true" in [attributes.get(WORK_LOST) for attributes in map(_ATTRIBUTES, infos)]
    return None if lost else infos
