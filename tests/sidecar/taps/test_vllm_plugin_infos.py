"""The infos the plugin's rows make: a finished request's, and those of a restart's requests in flight."""

from __future__ import annotations

from sidecar.attribution.events import WORK_LOST
from sidecar.taps.vllm_plugin_infos import aborted_infos, finished_info
from sidecar.taps.vllm_plugin_rows import FinishRow

ROW = FinishRow("cmpl-abc-0", "abc", 120, 31, 0.05, 0.6, 0.7, "stop")


def test_a_finished_request_keeps_vllms_id_its_reason_tokens_and_times() -> None:
    info = finished_info(ROW, "llama", 10.0, 10.7, work_lost=False)
    assert (info.request_id, info.model, info.start_s, info.end_s) == ("abc", "llama", 10.0, 10.7)
    assert (info.prompt_tokens, info.output_tokens, info.operation) == (120, 31, "text_completion")
    assert info.attributes == {"vllm.request_id": "cmpl-abc-0", "finish_reason": "stop"}


def test_a_request_decoding_while_a_datagram_was_lost_is_marked() -> None:
    assert finished_info(ROW, "llama", 10.0, 10.7, work_lost=True).attributes[WORK_LOST] == "true"


def test_a_restart_ends_each_request_in_flight_as_aborted_at_one_time() -> None:
    infos = aborted_infos([("a", 100, 5), ("b", 7, 1)], "llama", 42.0)
    assert [(i.request_id, i.prompt_tokens, i.output_tokens, i.end_s) for i in infos] == [
        ("a", 100, 5, 42.0),
        ("b", 7, 1, 42.0),
    ]
    assert all(i.attributes == {"finish_reason": "abort", "aborted_on": "vllm_restart"} for i in infos)
    assert aborted_infos([], "llama", 42.0) == []
