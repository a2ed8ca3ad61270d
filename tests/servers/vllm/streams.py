"""Streamed chat requests for the real-vLLM tests that cut something mid-decode."""

from __future__ import annotations

import json
import threading
import time
import urllib.request
from collections.abc import Sequence

__all__ = ["Stream", "stream_request", "wait_decoding"]


def stream_request(url: str, model: str, request_id: str, max_tokens: int) -> urllib.request.Request:
    """A streamed chat completion of exactly ``max_tokens`` (``ignore_eos``) under ``X-Request-Id``."""
    body = {"model": model, "messages": [{"role": "user", "content": "energy " * 20}],
            "max_tokens": max_tokens, "ignore_eos": True, "stream": True}  # fmt: skip
    return urllib.request.Request(
        f"{url}/v1/chat/completions",
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json", "X-Request-Id": request_id},
    )


class Stream:
    """A streamed chat request on a thread: counts the chunks it receives until the stream ends or
    the server goes away."""

    def __init__(self, url: str, model: str, request_id: str, max_tokens: int) -> None:
        self.http = stream_request(url, model, request_id, max_tokens)
        self.chunks = 0
        self.done = False  # vLLM said [DONE]: the stream was served to its end
        self.error = ""
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        try:
            with urllib.request.urlopen(self.http, timeout=120) as resp:
                for line in resp:
                    self.chunks += line.startswith(b"data: {")
                    self.done |= line.startswith(b"data: [DONE]")
        except Exception as err:  # the server was killed under it: what a client sees
            self.error = repr(err)


def wait_decoding(streams: Sequence[Stream], chunks: int = 5, timeout_s: float = 60.0) -> None:
    """Wait until every stream has received ``chunks`` chunks; AssertionError if one has not in time."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and min(s.chunks for s in streams) < chunks:
        time.sleep(0.05)
    assert min(s.chunks for s in streams) >= chunks, "the streams never started decoding"
