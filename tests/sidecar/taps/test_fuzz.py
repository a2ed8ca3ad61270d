"""Fuzzing the taps with hypothesis (a few hundred cases here; benchmarks/fuzz.py runs >= 100,000)."""

from __future__ import annotations

import asyncio
import functools
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sidecar.export.api import make_app
from tests.sidecar.taps import fuzzing as f
from tests.sidecar.taps import fuzzing_hook as fh
from tests.sidecar.taps import fuzzing_http as fx

FEW = settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@FEW
@given(f.plugin_datagrams())
def test_no_good_plugin_row_is_lost_next_to_bad_ones_and_nothing_escapes(
    case: tuple[bytes, set[str], set[str]],
) -> None:
    f.check_plugin_datagram(case)


@FEW
@given(f.datagram_bytes)
def test_any_bytes_as_a_plugin_datagram_are_counted_never_raised(data: bytes) -> None:
    f.check_plugin_bytes(data)


@FEW
@given(f.otlp_exports())
def test_no_good_span_is_lost_next_to_bad_ones_and_refusals_are_reported(
    case: tuple[bytes, set[str]],
) -> None:
    f.check_otlp_export(case)


@FEW
@given(st.binary(max_size=512))
def test_any_bytes_as_an_otlp_export_are_handled_or_refused_with_a_status(payload: bytes) -> None:
    f.check_otlp_bytes(payload)


KNOWN: dict[str, dict[str, Any]] = {"req-1": {"request_id": "req-1"}}


@FEW
@given(st.one_of(f.http_ids, st.sampled_from(sorted(KNOWN))))
def test_any_request_id_in_the_url_gets_200_404_or_400_never_500(request_id: str) -> None:
    app = make_app(metrics=bytes, lookup=KNOWN.get, ready=lambda: (True, ""))
    asyncio.run(f.check_http_path(app, KNOWN, request_id))


# ---- the scheduler hook's v2 wire ----------------------------------------------------------------
@FEW
@given(fh.hook_streams())
def test_bad_hook_datagrams_between_good_ones_are_counted_and_no_good_request_is_lost(
    case: tuple[list[bytes], set[int], dict[str, int]],
) -> None:
    fh.check_hook_stream(case)


@FEW
@given(fh.hook_rows())
def test_a_bad_row_in_a_hook_datagram_costs_no_good_request_of_the_same_datagram(
    case: tuple[list[bytes], dict[str, int]],
) -> None:
    fh.check_hook_rows(case)


@FEW
@given(fh.hook_messages)
def test_hook_datagrams_no_engine_would_send_are_handled_without_escaping_or_poisoning_counters(
    datagrams: list[bytes],
) -> None:
    fh.check_hook_message(datagrams)


@FEW
@given(f.datagram_bytes)
def test_any_bytes_as_a_hook_datagram_are_counted_never_raised(data: bytes) -> None:
    fh.check_hook_bytes(data)


# ---- HTTP paths and query parameters -------------------------------------------------------------
@functools.cache
def _energy_app() -> Any:
    return fx.energy_app()  # one app for all cases (as benchmarks/fuzz.py does)


@FEW
@given(fx.http_paths)
def test_any_path_and_query_gets_a_documented_status_never_500(
    case: tuple[str, list[tuple[str, str]]],
) -> None:
    asyncio.run(fx.check_http_path(_energy_app(), case))


@FEW
@given(fx.energy_queries)
def test_any_energy_query_is_answered_for_a_sane_interval_and_refused_400_otherwise(
    params: list[tuple[str, str]],
) -> None:
    asyncio.run(fx.check_energy_query(_energy_app(), params))
