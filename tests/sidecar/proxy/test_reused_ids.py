"""A client's X-Request-Id used again after its first request ended gets a new id, as a live one does.

The sidecar refuses work for an id it has made final (its last 100,000): taken again as it is, the
second request's work was refused and the requests beside it were charged for it (about twice).
"""

from __future__ import annotations

from sidecar.proxy.book import TraceBook
from sidecar.proxy.learn import Counts, RequestTrace
from sidecar.proxy.sender import WireSender


def trace(request_id: str) -> RequestTrace:
    return RequestTrace(request_id, 1.0, "/v1/chat/completions")


def test_the_in_process_book_gives_a_reused_id_a_new_one_and_counts_it() -> None:
    counts = Counts()
    book = TraceBook(counts, hold_s=0.5, model="m")
    first = trace("dup")
    assert book.begin(first) == "dup"
    first.end_s, first.done = 2.0, True
    first.changed()
    book.due(10.0)
    assert book.get("dup") is None  # finished and forgotten by the book
    again = book.begin(trace("dup"))
    assert again != "dup" and counts.counts()["duplicate_request_id"] == 1
    assert book.begin(trace("other")) == "other"  # a new id is taken as it is


def test_the_proxy_process_gives_a_reused_id_a_new_one_and_counts_it() -> None:
    counts = Counts()
    sender = WireSender(("127.0.0.1", 9), counts, clock=lambda: 0.0, wall=lambda: 1000.0)
    first = trace("dup")
    assert sender.begin(first) == "dup"
    first.end_s, first.done = 0.5, True
    sender.message()  # its rows sent: the finished trace is forgotten
    assert sender.live == 0
    assert sender.begin(trace("dup")) != "dup" and counts.counts()["duplicate_request_id"] == 1
