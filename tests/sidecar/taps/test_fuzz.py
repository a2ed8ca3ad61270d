"""Fuzzing the taps with hypothesis (a few hundred cases here; benchmarks/fuzz.py runs >= 100,000)."""

from __future__ import annotations

import asyncio
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sidecar.export.api import make_app
from tests.sidecar.taps import fuzzing as f

FEW = settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@FEW
@given(f.plugin_datagrams())
def test_no_good_plugin_row_is_lost_next_to_bad_ones_and_nothing_escapes(
    case: tuple[bytes, set[str], set[str]],
) -> None:
    f.check_plugin_datagram(case)


@FEW
@given(st.binary(max_size=512))
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
