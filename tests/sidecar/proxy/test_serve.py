"""The proxy's upstream URL check (:func:`sidecar.proxy.serve.check_upstream`)."""

from __future__ import annotations

import pytest

from sidecar.errors import ConfigError
from sidecar.proxy.serve import check_upstream


@pytest.mark.parametrize(
    ("url", "base"),
    [
        ("http://127.0.0.1:8000", "http://127.0.0.1:8000"),
        ("https://vllm.ns.svc:8443/", "https://vllm.ns.svc:8443"),
        ("http://vllm", "http://vllm"),  # the scheme's port
        ("http://[::1]:8000", "http://[::1]:8000"),
        ("http://gateway:80/team-a/", "http://gateway:80/team-a"),  # a path prefix: requests go under it
    ],
)
def test_an_upstream_url_is_its_base_without_the_trailing_slash(url: str, base: str) -> None:
    assert check_upstream(url) == base


@pytest.mark.parametrize(
    "url",
    [
        "localhost:8000",  # no scheme
        "ftp://host:21",
        "http://:8000",  # no host
        "http://host:99999",  # port out of range
        "http://host:0",
        "http://host:abc",
        "http://host:8000?x=1",  # a query or fragment would end up before each request's own path
        "http://host:8000#top",
        "http://user:secret@host:8000",  # credentials in a knob end up in logs and errors
    ],
)
def test_a_bad_upstream_url_is_a_config_error_naming_the_knob(url: str) -> None:
    with pytest.raises(ConfigError, match=r"^proxy_upstream: .* is not an http\(s\)://host\[:port\] URL"):
        check_upstream(url)
