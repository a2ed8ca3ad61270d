"""SSE framing: events as soon as complete, bytes unchanged, a broken upstream never held."""

from __future__ import annotations

from sidecar.proxy.sse import DONE, SseFramer, parse_data

STREAM = b'data: {"a": 1}\n\n: keep-alive\n\ndata: {"b":\r\ndata: 2}\r\n\r\ndata: [DONE]\n\n'


def test_every_split_of_a_stream_yields_the_same_events_and_bytes() -> None:
    for cut in range(1, len(STREAM)):
        framer = SseFramer()
        events = framer.feed(STREAM[:cut]) + framer.feed(STREAM[cut:]) + framer.close()
        assert b"".join(e.raw for e in events) == STREAM
        assert [e.data for e in events] == [b'{"a": 1}', None, b'{"b":\n2}', b"[DONE]"]


def test_a_stream_fed_in_pieces_of_every_size_yields_the_same_events_and_bytes() -> None:
    """The search for a boundary goes on where the last one stopped (an event trickled in small
    pieces was joined and scanned again at each one: time quadratic in its size; benchmarks/
    hostile_cost.py's "sse trickle" compares pieces with and without line ends)."""
    stream = STREAM + b"data: " + b"y" * 300 + b"\n\n" + b"data: [DONE]"
    for size in range(1, 40):
        framer = SseFramer()
        events = [e for k in range(0, len(stream), size) for e in framer.feed(stream[k : k + size])]
        events += framer.close()
        assert b"".join(e.raw for e in events) == stream
        assert [e.data for e in events][-2:] == [b"y" * 300, b"[DONE]"]


def test_an_event_trickled_past_the_limit_is_handed_on_raw_once_it_is_over() -> None:
    framer = SseFramer(max_event_bytes=100)
    pieces = [b"data: "] + [b"z" * 10] * 12
    out = [e for p in pieces for e in framer.feed(p)]
    assert [len(e.raw) for e in out] == [106] and out[0].data is None and framer.oversized == 1


def test_an_event_is_returned_as_soon_as_its_blank_line_arrives() -> None:
    framer = SseFramer()
    assert framer.feed(b'data: {"a": 1}\n') == []
    assert [e.data for e in framer.feed(b"\n")] == [b'{"a": 1}']


def test_an_unterminated_event_past_the_limit_is_handed_on_raw_and_counted() -> None:
    framer = SseFramer(max_event_bytes=10)
    out = framer.feed(b"data: " + b"x" * 20)
    assert b"".join(e.raw for e in out) == b"data: " + b"x" * 20 and framer.oversized == 1


def test_the_tail_of_a_stream_without_a_final_blank_line_is_not_lost() -> None:
    framer = SseFramer()
    assert framer.feed(b"data: [DONE]") == []
    assert [e.raw for e in framer.close()] == [b"data: [DONE]"]


def test_lf_only_streams_take_the_fast_path_with_the_same_events_as_crlf_ones() -> None:
    lf = b'data: {"a": 1}\n\n: keep-alive\n\nevent: x\ndata: {"b":\ndata:2}\n\n\ndata: [DONE]\n\n'
    crlf = lf.replace(b"\n", b"\r\n")
    for stream in (lf, crlf):
        for cut in range(1, len(stream)):
            framer = SseFramer()
            events = framer.feed(stream[:cut]) + framer.feed(stream[cut:]) + framer.close()
            assert b"".join(e.raw for e in events) == stream
            datas = [e.data for e in events]
            assert datas == [b'{"a": 1}', None, b'{"b":\n2}', b"[DONE]"], (stream, cut)


def test_parse_data_tells_json_objects_done_and_garbage_apart() -> None:
    assert parse_data('{"x": 1}') == {"x": 1} == parse_data(b'{"x": 1}')
    assert parse_data(b"[DONE]") == DONE
    assert parse_data(" [DONE] ") == DONE
    assert parse_data("not json") is None
    assert parse_data("[1, 2]") is None
    assert parse_data(None) is None
