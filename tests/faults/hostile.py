"""Hostile inputs for a running ``jouletrace sidecar`` process, and the good items sent next to them.

Every sender here talks to the sidecar the way the real thing does (gRPC, UDP, HTTP);
good items have ids ``good-*`` and must come out as final records, bad ones must be
refused and counted without costing them anything.
"""

from __future__ import annotations

import http.server
import json
import socket
import threading
import time
import urllib.error
import urllib.request
from typing import Any

import grpc
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans, ScopeSpans, Span

from sidecar.contracts.scheduler_wire import FinRow, Message, NewRow, StepRow, encode

__all__ = [
    "MetricsTarget",
    "get",
    "hook_run",
    "http_probe",
    "otlp_faults",
    "otlp_retry",
    "plugin_run",
    "udp",
]

VLLM_PAGE = """# TYPE vllm:prompt_tokens counter
vllm:prompt_tokens_total{engine="0",model_name="m"} 100
# TYPE vllm:generation_tokens counter
vllm:generation_tokens_total{engine="0",model_name="m"} 50
# TYPE vllm:num_requests_running gauge
vllm:num_requests_running{engine="0",model_name="m"} 1
"""


class MetricsTarget:
    """A vLLM /metrics stand-in whose ``mode`` is ``hang`` (answers after 5 s), ``garbage`` or ``good``."""

    def __init__(self) -> None:
        self.mode = "hang"
        target = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                if target.mode == "hang":
                    time.sleep(5.0)
                body = b"\x00\xff{not: a page" * 20 if target.mode == "garbage" else VLLM_PAGE.encode()
                try:
                    self.send_response(200)
                    self.send_header("Content-Type", "text/plain")
                    self.end_headers()
                    self.wfile.write(body)
                except OSError:  # the scraper gave up on a hung answer
                    pass

            def log_message(self, *args: Any) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/metrics"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def get(url: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=5.0) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as err:
        return err.code, err.read()


def udp(port: int, data: bytes) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.sendto(data, ("127.0.0.1", port))


# ---- OTLP ----------------------------------------------------------------------------------------
def _span(rid: str, start_s: float, n: int, **override: Any) -> Span:
    attrs: dict[str, Any] = {
        "gen_ai.request.id": f"chatcmpl-{rid}",
        "gen_ai.usage.prompt_tokens": 10,
        "gen_ai.usage.completion_tokens": 5,
        "gen_ai.latency.e2e": 0.3,
        "gen_ai.latency.time_in_model_prefill": 0.05,
        "gen_ai.latency.time_in_model_decode": 0.25,
        **override,
    }
    values = {str: "string_value", bool: "bool_value", int: "int_value", float: "double_value"}
    return Span(
        trace_id=(7_000_000 + n).to_bytes(16, "big"),
        span_id=(7_000_000 + n).to_bytes(8, "big"),
        name="llm_request",
        start_time_unix_nano=int(start_s * 1e9),
        end_time_unix_nano=int((start_s + 0.3) * 1e9),
        attributes=[KeyValue(key=k, value=AnyValue(**{values[type(v)]: v})) for k, v in attrs.items()],
    )


def _export(spans: list[Span]) -> bytes:
    request = trace_service_pb2.ExportTraceServiceRequest(
        resource_spans=[ResourceSpans(scope_spans=[ScopeSpans(spans=spans)])]
    )
    data: bytes = request.SerializeToString()
    return data


POISON: list[dict[str, Any]] = [
    {"gen_ai.usage.completion_tokens": float("nan")},
    {"gen_ai.usage.prompt_tokens": -7},
    {"gen_ai.usage.completion_tokens": 2**62},
    {"gen_ai.usage.prompt_tokens": "abc"},
    {"gen_ai.latency.e2e": float("inf")},
    {"gen_ai.request.id": ""},
]


def otlp_faults(port: int, flood_spans: int, flood_rate: float) -> dict[str, Any]:
    """Good spans next to poison ones, a truncated, an oversized and an undecodable export, and a
    flood of ``flood_spans`` at ``flood_rate`` spans/s.

    Returns the gRPC outcomes and the good request ids sent (``good-o*``)."""
    channel = grpc.insecure_channel(f"127.0.0.1:{port}")
    raw = channel.unary_unary(
        "/opentelemetry.proto.collector.trace.v1.TraceService/Export",
        request_serializer=lambda b: b,
        response_deserializer=trace_service_pb2.ExportTraceServiceResponse.FromString,
    )
    now = time.time()
    good = [_span(f"good-o{i}", now - 0.4, i) for i in range(5)]
    bad = [_span(f"bad-o{i}", now - 0.4, 100 + i, **p) for i, p in enumerate(POISON)]
    bad.append(_span("bad-o-reversed", now, 200, **{"gen_ai.latency.e2e": 0.3}))
    bad[-1].end_time_unix_nano = bad[-1].start_time_unix_nano - 10**9  # ends before it starts
    mixed = [s for pair in zip(good, bad, strict=False) for s in pair] + bad[len(good) :]
    out: dict[str, Any] = {"good": [f"good-o{i}" for i in range(5)], "codes": []}
    out["retry"] = _export(good[:1])  # what vLLM's exporter would send again after a failed export
    out["mixed"] = raw(_export(mixed), timeout=10).partial_success.rejected_spans
    whole = _export([_span(f"bad-t{i}", now, 300 + i) for i in range(20)])
    big = _export([_span(f"bad-big{i}", now, 400 + i, pad="x" * 4000) for i in range(20)])  # ~80 KB
    payloads = [whole[: len(whole) // 2 + 3], b"\xff\xfe not protobuf", big]  # truncated, garbage, oversized
    for payload in payloads:
        try:
            raw(payload, timeout=10)
            out["codes"].append("OK")
        except grpc.RpcError as err:
            out["codes"].append(err.code().name)
    stub = trace_service_pb2_grpc.TraceServiceStub(channel)  # type: ignore[no-untyped-call]
    t0 = time.monotonic()
    for k in range(0, flood_spans, 100):  # exports of ~31 KB, at flood_rate spans/s
        time.sleep(max(t0 + k / flood_rate - time.monotonic(), 0.0))
        batch = [_span(f"flood-{k + i}", time.time() - 0.5, 10_000 + k + i) for i in range(100)]
        stub.Export(trace_service_pb2.ExportTraceServiceRequest(
            resource_spans=[ResourceSpans(scope_spans=[ScopeSpans(spans=batch)])]), timeout=30)  # fmt: skip
    out["flood_s"] = time.monotonic() - t0
    channel.close()
    return out


def otlp_retry(port: int, payload: bytes) -> int:
    """Send an export again as it was; returns the spans it refused."""
    channel = grpc.insecure_channel(f"127.0.0.1:{port}")
    raw = channel.unary_unary(
        "/opentelemetry.proto.collector.trace.v1.TraceService/Export",
        request_serializer=lambda b: b,
        response_deserializer=trace_service_pb2.ExportTraceServiceResponse.FromString,
    )
    refused = int(raw(payload, timeout=10).partial_success.rejected_spans)
    channel.close()
    return refused


# ---- the vLLM plugin (v1) and the scheduler hook (v2) over UDP -----------------------------------------
def _plugin(pid: int, seq: int, wall: float, **kw: Any) -> bytes:
    return json.dumps(
        {"v": 1, "pid": pid, "seq": seq, "wall": wall, "model": "tiny", "live": True, **kw}
    ).encode()


def plugin_run(port: int) -> list[str]:
    """A good request's life from one vLLM pid with poison datagrams and rows in between."""
    now, seq = time.time(), 0
    poison = [
        b"\xff\x00garbage",
        b'{"v": 1, "pid": 9, "seq": 1, "wall": Infinity}',
        _plugin(9, 0, 1e300),  # dated in no real year
        b"[" * 10_000,
    ]
    udp(port, _plugin(9, seq, now, it=[0.0, 1, 10, 0, 0], start=[["chatcmpl-good-p1", 10, 10, 0.05]]))
    for data in poison:
        udp(port, data)
    for k in range(1, 5):
        seq += 1
        bad_rows = {"start": [["bad-p", float("inf"), 3, 0.1]], "fin": [["bad-q", -5, 1, 0, 0, 0, 0, "stop"]]}
        udp(port, _plugin(9, seq, now + 0.05 * k, it=[0.0, 1, 0, 0, 0], **(bad_rows if k == 2 else {})))
    seq += 1
    fin = [["chatcmpl-good-p1", 10, 5, 0.0, 0.05, 0.2, 0.25, "length"]]
    udp(port, _plugin(9, seq, now + 0.3, fin=fin))
    return ["good-p1"]


def hook_run(port: int) -> list[str]:
    """A good request's steps from one engine pid with garbage and poison datagrams in between."""
    now = time.time()
    steps = [StepRow(0.3 - 0.05 * i, 0.25 - 0.05 * i, [0], [10 if i == 0 else 1], [0 if i == 0 else 9 + i])
             for i in range(5)]  # fmt: skip
    good = [
        *encode(Message(5151, 0, now, "tiny", [NewRow(0, "chatcmpl-good-h1", 10, 0.35)], [], [], [])),
        *encode(Message(5151, 1, now, "tiny", [], steps, [], [])),
        *encode(Message(5151, 2, now, "tiny", [], [], [FinRow(0, 5, "length")], [])),
    ]
    poison = [
        b"\x00\x01",
        b'{"v":2,"kind":"sched","pid":5151,"seq":1,"wall":1' + b"0" * 400 + b"}",
        b"{" * 5000,
    ]
    for g, p in zip(good, poison, strict=True):
        udp(port, g)
        udp(port, p)
    return ["good-h1"]


# ---- HTTP --------------------------------------------------------------------------------------------
PROBES = [
    "/v1/requests/" + "x" * 300,
    "/v1/requests/%00%01",
    "/v1/requests/%E2%80%8B",
    "/v1/energy?start_unix_s=nan&end_unix_s=1",
    "/v1/energy?start_unix_s=1&end_unix_s=1e300",
    "/v1/energy?start_unix_s=5&end_unix_s=1",
    "/v1/energy",
    "/nope/../../etc/passwd",
    "/v1/requests/",
]


def http_probe(base: str) -> dict[str, int]:
    """Each hostile path's status."""
    return {path: get(base + path)[0] for path in PROBES}
