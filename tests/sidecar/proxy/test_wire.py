"""The proxy tap built from the sidecar's config: record URLs point at the sidecar's API."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import numpy as np

from sidecar.attribution.records import Snapshot
from sidecar.config import load_config
from sidecar.proxy.wire import proxy_tap
from tests.sidecar.proxy.conftest import fitted_rule


def _record_base(host: str, client_host: str, http_port: int | None = None) -> str:
    config = load_config({"proxy_upstream": "http://localhost:8000", "host": host, "port": "9464"})
    sidecar: Any = SimpleNamespace(http_port=http_port)
    tap = proxy_tap(config, lambda: sidecar, clock=lambda: 0.0)
    return tap._record_base(client_host)


def test_a_wildcard_api_address_is_reached_by_the_name_the_client_used() -> None:
    assert _record_base("0.0.0.0", "llm.ml.svc") == "http://llm.ml.svc:9464"
    assert _record_base("::", "::1") == "http://[::1]:9464"


def test_a_specific_api_address_and_the_bound_port_win() -> None:
    assert _record_base("127.0.0.1", "llm.ml.svc", http_port=40123) == "http://127.0.0.1:40123"


def test_the_tap_takes_its_knobs_from_the_config() -> None:
    knobs = {
        "proxy_upstream": "http://engine:8000/",
        "proxy_port": "0",
        "settle_s": "3",
        "request_timeout_s": "8",
    }
    sidecar: Any = SimpleNamespace(http_port=None)
    tap = proxy_tap(load_config(knobs), lambda: sidecar, clock=lambda: 0.0)
    assert (tap.upstream, tap.host, tap.port, tap.hold_after_s) == ("http://engine:8000", "127.0.0.1", 0, 1.5)
    assert tap._book.alive_every_s == 2.0  # a quarter of request_timeout_s: keep-alive of quiet answers


def test_prices_come_from_the_sidecars_snapshot_with_its_rules_interval() -> None:
    rule = fitted_rule()
    snap = Snapshot(1.0, "measured", "fitted", fit=rule.fit.snapshot())
    sidecar: Any = SimpleNamespace(
        http_port=None, snapshot=lambda: snap, attributor=SimpleNamespace(rule=rule)
    )
    config = load_config({"proxy_upstream": "http://engine:8000", "proxy_port": "0"})
    prices = proxy_tap(config, lambda: sidecar, clock=lambda: 0.0)._prices()
    assert prices.fitted and prices.cov is not None
    assert np.array(prices.cov).tolist() == rule.fit.cov.tolist()


def test_the_sidecar_listens_for_the_proxy_process_unless_its_port_is_0() -> None:
    from sidecar.taps.proxy_wire import ProxyWireReceiver
    from sidecar.wiring import build_sidecar

    base = {"meter": "cpu-model", "port": "0", "otlp_port": "0", "ledger_path": "", "settle_s": "3"}
    sidecar = build_sidecar(load_config({**base, "proxy_wire_port": "9999", "proxy_wire_host": "127.0.0.2"}))
    try:
        (rx,) = [t for t in sidecar.taps if isinstance(t, ProxyWireReceiver)]
        assert (rx.host, rx.port, rx.knob, rx._book.hold_s) == ("127.0.0.2", 9999, "proxy_wire_port", 1.5)
        assert sidecar.taps[-1] is rx  # drained after the vLLM taps: independent of them
        assert rx.is_final is not None and not rx.is_final("r")  # attribution's final ids
        sidecar.attributor._finalized.add("r")
        assert rx.is_final("r")
    finally:
        sidecar.close()
    off = build_sidecar(load_config({**base, "proxy_wire_port": "0"}))
    try:
        assert not [t for t in off.taps if isinstance(t, ProxyWireReceiver)]
    finally:
        off.close()


def test_a_stream_past_the_chunk_cap_keeps_no_more_times_and_one_row_tells_the_sidecar() -> None:
    """A stream that never ends grew the proxy by ~39 MB a million chunks: past the cap the chunks are
    counted, not kept, and one row past the cap tells the sidecar that its work is lost."""
    from sidecar.contracts.proxy_wire import MAX_CHUNKS_PER_REQUEST
    from sidecar.proxy.learn import Counts, RequestTrace
    from sidecar.proxy.sender import WireSender

    trace = RequestTrace("r1", arrival_s=0.0, path="/v1/chat/completions", stream=True)
    sender = WireSender(("127.0.0.1", 9), Counts(), clock=lambda: 2.0, wall=lambda: 1000.0)
    sender.begin(trace)
    for k in range(MAX_CHUNKS_PER_REQUEST + 5):
        trace.add_chunk(1.0 + k * 1e-6)
    assert len(trace.chunk_s) == MAX_CHUNKS_PER_REQUEST and trace.chunks_over == 5 and trace.work_lost
    rows = sender.message().chunks
    assert sum(len(r.ago_us) for r in rows) == MAX_CHUNKS_PER_REQUEST + 1
    assert rows[-1].first == MAX_CHUNKS_PER_REQUEST + 4  # past the cap: the receiver marks the work lost
    trace.add_chunk(1.5)
    assert not sender.message().chunks  # said once


def test_a_sidecar_with_the_proxy_in_its_process_ticks(tmp_path: Any) -> None:
    """Adversarial probe: the tap kept its hold as a float named ``hold_s``, which the tick calls on a
    tap that waits for work (a diffusion call begun): every tick of a sidecar with ``proxy_upstream``
    raised TypeError, and nothing was attributed."""
    from sidecar.wiring import build_sidecar

    knobs = {"meter": "sim", "port": "0", "otlp_port": "0", "plugin_port": "0", "hook_port": "0"}
    knobs |= {"proxy_wire_port": "0", "proxy_port": "0", "proxy_upstream": "http://127.0.0.1:1"}
    sidecar = build_sidecar(load_config({**knobs, "ledger_path": str(tmp_path / "l.db")}, environ={}))
    try:
        sidecar.tick()
        assert sidecar.tick_failures == 0
    finally:
        sidecar.close()
