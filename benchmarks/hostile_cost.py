"""What input that passes the checks but is shaped to cost time costs, against clean input of the same size.

Each case drives one real part of the sidecar (no mocks) with the same amount of input twice:
clean, and shaped the way a hostile sender would shape it, and prints both CPU times
(``time.process_time``, best of ``--repeat``) and their ratio. A ratio near 1 means the shape
buys the sender nothing; each case names what it once cost (the fix's commit says more):

* **otlp id-less**: one OTLP export of ``--spans`` vLLM ``llm_request`` spans through
  :meth:`OtlpReceiver.receive` (decode, checks, queue), all with the request id, against the same
  with every 1,000th span's id left out (those go to the full decode). The kept spans' positions
  were once found with a set made per span: quadratic (40,000 spans took 19 s).
* **hook jumps**: one scheduler-hook datagram of 1,500 ``new`` rows into a
  :class:`HookReceiver` already holding 100,000 live requests, numbered on (clean) or each jumping
  past the look-up window (hostile). A jump once refilled the window from every live request.
* **span long decode**: a drain of 100 ordinary ``llm_request`` spans through
  :class:`VllmSpanHandler` (the step clock's fit and cut included), after a drain that held one
  span whose decode lasted a day (hostile) or an ordinary one (clean). The day-long window once
  stayed in the step clock's fit: every later drain refitted ~1.7 million bins.
* **metrics names**: ``/metrics`` rendered after ``--records`` final records whose model and task
  all differ (hostile) or are all one (clean). Such names once filled every stream's 2,000
  attribute sets.
* **otlp bad string**: one OTLP export of 200 ``llm_request`` spans under a resource of 4,000
  attributes, as the whole decode reads them, against the same with one span's id not UTF-8 (the
  span-by-span decode). That decode once read the resource again for every span.
* **sse trickle**: a 256 KiB server-sent event fed to the proxy's :class:`SseFramer` in 8-byte
  pieces, without line ends (clean) or with one in every piece (hostile). Each such piece once
  joined the buffer and searched it from its start: quadratic.

Ends with one line ``hostile/clean worst ratio N``.

    .venv/bin/python benchmarks/hostile_cost.py [--spans 40000] [--records 20000] [--repeat 3]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the sidecar package

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.resource.v1.resource_pb2 import Resource as OtlpResource
from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans, ScopeSpans
from opentelemetry.sdk.resources import Resource

from sidecar.export.metrics import MetricsExporter
from sidecar.proxy.sse import SseFramer
from sidecar.taps.otlp import OtlpReceiver
from sidecar.taps.spans import ReceivedSpan, TapOutput
from sidecar.taps.vllm_hook import HookReceiver
from sidecar.taps.vllm_spans import VllmSpanHandler
from tests.sidecar.export.factories import golden_snapshot, make_record

NOW_UNIX_S = 1.7e9  # the parts' clock in this benchmark (Unix s)


def best_cpu_s(run: Callable[[], Callable[[], object]], repeat: int) -> float:
    """The least CPU time of ``repeat`` runs of the timed step ``run()`` returns (set-up untimed)."""
    best = float("inf")
    for _ in range(repeat):
        step = run()
        t0 = time.process_time()
        step()
        best = min(best, time.process_time() - t0)
    return best


def otlp_export(n: int, idless_every: int) -> bytes:
    request = ExportTraceServiceRequest()
    spans = request.resource_spans.add().scope_spans.add().spans
    t_ns = int(NOW_UNIX_S * 1e9)
    for i in range(n):
        span = spans.add(
            trace_id=(i + 1).to_bytes(16, "big"),
            span_id=(i + 1).to_bytes(8, "big"),
            name="llm_request",
            start_time_unix_nano=t_ns - 2_000_000_000,
            end_time_unix_nano=t_ns - 1_000_000_000,
        )
        if not idless_every or i % idless_every:
            kv = span.attributes.add(key="gen_ai.request.id")
            kv.value.string_value = f"chatcmpl-{i}"
    return request.SerializeToString()


def otlp_case(spans: int, idless_every: int) -> Callable[[], object]:
    payload = otlp_export(spans, idless_every)
    rx = OtlpReceiver([VllmSpanHandler(lambda u: u)], max_queued_spans=10**9, wall=lambda: NOW_UNIX_S)
    return lambda: rx.receive(payload)


def hook_datagram(seq: int, rows: list[list[object]]) -> bytes:
    return json.dumps(
        {"v": 2, "kind": "sched", "pid": 1, "seq": seq, "wall": NOW_UNIX_S, "new": rows}
    ).encode()


def hook_case(jump: int) -> Callable[[], object]:
    hook = HookReceiver(lambda u: u - NOW_UNIX_S + 1000.0, wall=lambda: NOW_UNIX_S)
    idx = 0
    for seq in range(60):  # 102,000 live requests numbered on (the cap keeps 100,000)
        hook.feed(hook_datagram(seq, [[idx + j, f"r{idx + j}", 1, 0] for j in range(1700)]), TapOutput())
        idx += 1700
    rows: list[list[object]] = []
    for j in range(1500):
        idx += jump
        rows.append([idx, f"n{j}", 1, 0])
    data = hook_datagram(60, rows)
    return lambda: hook.feed(data, TapOutput())


def llm_span(i: int, start: float, e2e_s: float, decode_s: float) -> ReceivedSpan:
    attributes: dict[str, str | int | float | bool] = {
        "gen_ai.request.id": f"chatcmpl-s{i}",
        "gen_ai.usage.prompt_tokens": 10,
        "gen_ai.usage.completion_tokens": 100,
        "gen_ai.latency.e2e": e2e_s,
        "gen_ai.latency.time_in_model_prefill": 0.01,
        "gen_ai.latency.time_in_model_decode": decode_s,
    }
    return ReceivedSpan(f"{i:032x}", f"{i:016x}", "", "llm_request", start, start + e2e_s, attributes)


def span_case(first_decode_s: float) -> Callable[[], object]:
    handler = VllmSpanHandler(lambda u: u - NOW_UNIX_S + 1000.0, wall=lambda: NOW_UNIX_S)
    out = TapOutput()
    first = llm_span(0, NOW_UNIX_S - first_decode_s - 1.0, first_decode_s + 0.5, first_decode_s)
    handler.handle(first, out)
    for k in range(1, 4):  # ordinary drains before the one timed
        for j in range(100):
            handler.handle(llm_span(k * 100 + j, NOW_UNIX_S - 2.0, 1.5, 1.4), out)
        handler.flush(out)
    later = [llm_span(1000 + j, NOW_UNIX_S - 2.0, 1.5, 1.4) for j in range(100)]

    def drain() -> None:
        for span in later:
            handler.handle(span, TapOutput())
        handler.flush(TapOutput())

    return drain


def metrics_case(records: int, distinct: bool) -> Callable[[], object]:
    exporter = MetricsExporter(golden_snapshot, resource=Resource({}), model="served")
    exporter.record(
        make_record(
            request_id=f"r{k}", model=f"m-{k}" if distinct else "m", task=f"t-{k}" if distinct else "t"
        )
        for k in range(records)
    )
    return exporter.render


def bad_string_case(bad: bool) -> Callable[[], object]:
    attrs = [KeyValue(key=f"k{i}", value=AnyValue(string_value="v" * 20)) for i in range(4000)]
    spans = list(
        ExportTraceServiceRequest.FromString(otlp_export(200, 0)).resource_spans[0].scope_spans[0].spans
    )
    export = ExportTraceServiceRequest(
        resource_spans=[
            ResourceSpans(resource=OtlpResource(attributes=attrs), scope_spans=[ScopeSpans(spans=spans)])
        ]
    ).SerializeToString()
    if bad:  # one span's request id: four bytes that are not UTF-8
        first_id = spans[0].attributes[0].value.string_value.encode()
        export = export.replace(first_id, first_id[:-4] + b"\xc3\x28\xa0\xa1", 1)
    handler = VllmSpanHandler(lambda unix_s: unix_s, on_span=lambda rid, s: None)  # spans decoded whole
    receiver = OtlpReceiver([handler], wall=lambda: NOW_UNIX_S)
    refused = receiver.receive(export)  # once untimed: the case is what it says (then a retry each run)
    assert refused == ({"undecodable_span": 1} if bad else {}), refused
    return lambda: OtlpReceiver([handler], wall=lambda: NOW_UNIX_S).receive(export)


def sse_case(line_ends: bool) -> Callable[[], object]:
    piece = b"abc\ndefg" if line_ends else b"abcdefgh"
    pieces = [b"data: "] + [piece] * (256 * 1024 // 8)

    def feed() -> None:
        framer = SseFramer()
        for p in pieces:
            framer.feed(p)

    return lambda: feed()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--spans", type=int, default=40_000, help="spans in the OTLP export (under 4 MiB)")
    parser.add_argument("--records", type=int, default=20_000, help="final records before /metrics")
    parser.add_argument("--repeat", type=int, default=3, help="runs of each; the least CPU time counts")
    args = parser.parse_args()
    cases: list[tuple[str, Callable[[], Callable[[], object]], Callable[[], Callable[[], object]]]] = [
        ("otlp id-less", lambda: otlp_case(args.spans, 0), lambda: otlp_case(args.spans, 1000)),
        ("hook jumps", lambda: hook_case(1), lambda: hook_case(20_000)),
        ("span long decode", lambda: span_case(1.4), lambda: span_case(86_399.0)),
        (
            "metrics names",
            lambda: metrics_case(args.records, False),
            lambda: metrics_case(args.records, True),
        ),
        ("otlp bad string", lambda: bad_string_case(False), lambda: bad_string_case(True)),
        ("sse trickle", lambda: sse_case(False), lambda: sse_case(True)),
    ]
    print(f"CPU s, least of {args.repeat} runs; the same amount of input clean and shaped")
    print(f"  {'case':18s} {'clean':>9s} {'hostile':>9s} {'ratio':>7s}")
    worst = 0.0
    for name, clean, hostile in cases:
        clean_s, hostile_s = best_cpu_s(clean, args.repeat), best_cpu_s(hostile, args.repeat)
        ratio = hostile_s / max(clean_s, 1e-6)
        worst = max(worst, ratio)
        print(f"  {name:18s} {clean_s:9.4f} {hostile_s:9.4f} {ratio:7.1f}")
    print(f"hostile/clean worst ratio {worst:.1f}")


if __name__ == "__main__":
    main()
