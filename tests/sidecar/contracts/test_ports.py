"""Hosts as they go in URLs."""

from __future__ import annotations

import pytest

from sidecar.contracts.ports import url_host


@pytest.mark.parametrize(
    ("host", "in_url"),
    [
        ("::1", "[::1]"),
        ("[::1]", "[::1]"),
        ("fe80::1%eth0", "[fe80::1%eth0]"),
        ("127.0.0.1", "127.0.0.1"),
        ("llm.ml.svc", "llm.ml.svc"),
        ("", ""),
    ],
)
def test_an_ipv6_address_is_bracketed_once_and_other_hosts_are_kept(host: str, in_url: str) -> None:
    assert url_host(host) == in_url
