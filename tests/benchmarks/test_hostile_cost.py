"""benchmarks/hostile_cost.py's cases are shaped as they say: each hostile input takes the path it
names (not a refusal at the door), and the clean one is the same amount of ordinary input."""

from __future__ import annotations

from sidecar.taps.otlp import OtlpReceiver
from sidecar.taps.span_rows import decode_rows
from sidecar.taps.spans import TapOutput
from sidecar.taps.vllm_hook import HookReceiver
from sidecar.taps.vllm_span_format import ROW_SPEC
from sidecar.taps.vllm_spans import VllmSpanHandler
from tests.benchmarks.bench_module import load_bench

bench = load_bench("hostile_cost")


def test_the_id_less_export_sends_every_thousandth_span_to_the_full_decode() -> None:
    _, generic = decode_rows(bench.otlp_export(3000, 1000), ROW_SPEC)
    assert generic == [0, 1000, 2000]
    _, none = decode_rows(bench.otlp_export(3000, 0), ROW_SPEC)
    assert none == []
    rx = OtlpReceiver([VllmSpanHandler(lambda u: u)], wall=lambda: bench.NOW_UNIX_S)
    rx.receive(bench.otlp_export(3000, 1000))
    assert rx.counts["received"] == 3000  # dated near the receiver's clock: none refused


def test_the_jumping_hook_rows_each_land_past_the_look_up_window() -> None:
    """hook_case(20_000)'s rows, fed to a receiver: every one is taken and each moves the window."""
    hook = HookReceiver(lambda u: u - bench.NOW_UNIX_S + 1000.0, wall=lambda: bench.NOW_UNIX_S)
    bases = []
    for k in range(1, 6):
        hook.feed(bench.hook_datagram(k, [[k * 20_000, f"n{k}", 1, 0]]), TapOutput())
        (sender,) = hook.senders
        bases.append(sender.slot._base)
    assert hook.live == 5 and len(set(bases)) == 5 and hook.counts["rejected_bad_time"] == 0


def test_the_long_decode_span_is_taken_but_its_window_is_not_fitted() -> None:
    handler = VllmSpanHandler(lambda u: u - bench.NOW_UNIX_S + 1000.0, wall=lambda: bench.NOW_UNIX_S)
    out = TapOutput()
    long = bench.llm_span(0, bench.NOW_UNIX_S - 86_400.0, 86_399.5, 86_399.0)
    assert handler.handle(long, out) and len(out.infos) == 1  # not refused: ends before now
    handler.flush(out)
    assert len(handler.clock._windows) == 0  # not observed by the step clock


def test_the_distinct_names_fold_and_the_same_names_do_not() -> None:
    render = bench.metrics_case(200, True)
    assert render.__self__.labels_folded > 0
    assert bench.metrics_case(200, False).__self__.labels_folded == 0
