"""A client's request id of up to 256 characters is taken by every vLLM tap, though vLLM's own id is
longer (``chatcmpl-<id>``, ``cmpl-<id>-0``); one of 257 is refused, a huge one before it is looked at.

Adversarial probe: the 256-character limit was applied to vLLM's id, so a client's id of 248..256
characters (which ``GET /v1/requests/{id}`` takes) was refused as ``bad_id`` by the span, plugin and
hook taps alike, and the request's record was lost.
"""

from __future__ import annotations

import pytest

from sidecar.contracts.scheduler_wire import (
    MAX_CLIENT_ID_CHARS,
    MAX_ID_CHARS,
    FinRow,
    Message,
    NewRow,
    StepRow,
    decode,
    encode,
)
from sidecar.contracts.vllm_ids import NUMBERED
from sidecar.taps import validate as v
from sidecar.taps import vllm_span_format
from sidecar.taps.spans import TapOutput
from sidecar.taps.vllm_span_format import CHAT, checked_id, one_row
from tests.sidecar.taps.test_vllm_hook import dgram
from tests.sidecar.taps.test_vllm_hook import rx as hook_receiver
from tests.sidecar.taps.test_vllm_plugin import msg, receiver
from tests.sidecar.taps.test_vllm_spans import handler, llm_span

LONGEST = "x" * v.LIMITS.max_id_chars  # the longest id the API looks a record up by
OVER = LONGEST + "y"


@pytest.mark.parametrize(
    "raw", [f"chatcmpl-{LONGEST}", f"cmpl-{LONGEST}-0", f"classify-{LONGEST}-0", LONGEST]
)
def test_the_id_limit_is_the_clients_not_that_of_vllms_id(raw: str) -> None:
    assert checked_id(raw, "id") == (raw, LONGEST)


@pytest.mark.parametrize("raw", [f"chatcmpl-{OVER}", f"cmpl-{OVER}-0", OVER, f"{CHAT}a\tb", ""])
def test_a_client_id_over_the_limit_or_not_printable_is_refused(raw: str) -> None:
    with pytest.raises(v.Rejected) as err:
        checked_id(raw, "id")
    assert err.value.reason == "bad_id"


def test_a_huge_id_is_refused_before_it_is_looked_at(monkeypatch: pytest.MonkeyPatch) -> None:
    def looked_at(raw: str) -> str:
        raise AssertionError("normalized")

    monkeypatch.setattr(vllm_span_format, "normalize_request_id", looked_at)
    for raw in (CHAT + "x" * 1_000_000, "x" * (MAX_ID_CHARS + 1)):
        with pytest.raises(v.Rejected):
            checked_id(raw, "id")


def test_vllms_id_has_room_for_all_it_adds_to_the_longest_client_id() -> None:
    prefixes = (CHAT, *NUMBERED)
    added = len("999999_") + max(len(p) for p in prefixes) + len("-0")  # a child's, a prefix, a number
    assert v.LIMITS.max_id_chars == MAX_CLIENT_ID_CHARS and v.LIMITS.max_id_chars + added <= MAX_ID_CHARS
    new = NewRow(0, f"0_chatcmpl-{LONGEST}", 5, 1.0)  # a parallel-sampling child, on the hook's wire
    assert decode(encode(Message(7, 0, 1000.0, "m", [new], [], [], []))[0]).new == [new]


def test_a_span_of_the_longest_client_id_is_its_record() -> None:
    span = llm_span(f"chatcmpl-{LONGEST}")
    reasons = v.Reasons(1)
    handler().check_rows(one_row(span), reasons)  # the check as the export arrives
    assert reasons.counts() == {}
    out = TapOutput()
    assert handler().handle(span, out)
    assert [info.request_id for info in out.infos] == [LONGEST]
    with pytest.raises(v.Rejected):
        handler().handle(llm_span(f"chatcmpl-{OVER}"), TapOutput())


def test_a_plugin_request_of_the_longest_client_id_is_its_record() -> None:
    rx, out = receiver(), TapOutput()
    for k, rid in enumerate((LONGEST, OVER)):
        start = [[f"chatcmpl-{rid}", 10, 10, 0.02]]
        fin = [[f"chatcmpl-{rid}", 10, 2, 0.0, 0.02, 0.1, 0.5, "length"]]
        rx.feed(msg(2 * k, [0.0, 1, 10, 0, 0], start=start), out)
        rx.feed(msg(2 * k + 1, [0.0, 1, 0, 0, 0], wall=1000.1, fin=fin), out)
    assert [info.request_id for info in out.infos] == [LONGEST]
    assert rx.counts["rejected_bad_id"] == 2  # the longer one's start and fin


def test_a_hook_request_of_the_longest_client_id_is_its_record() -> None:
    rx, out = hook_receiver(1001.0), TapOutput()
    for k, rid in enumerate((LONGEST, OVER)):
        new, fin = [NewRow(k, f"chatcmpl-{rid}", 5, 1.0)], [FinRow(k, 2, "length")]
        rx.feed(dgram(2 * k, new=new, steps=[StepRow(0.5, 0.4, [k], [5], [0])]), out)
        rx.feed(dgram(2 * k + 1, wall=1000.1, steps=[StepRow(0.4, 0.3, [k], [1], [5])], fin=fin), out)
    # the longer one's new row refused: its steps go under the engine's unknown request
    assert [info.request_id for info in out.infos] == [LONGEST, "unknown-7-1"]
    assert rx.counts["rejected_bad_id"] == 1
