"""A streamed chat request on a thread, for the real-vLLM tests that cut something mid-decode."""

from __future__ import annotations

import json
import threading
import urllib.request

__all__ = ["Stream"]


class Stream:
    """A streamed chat request on a thread: counts the chunks it receives until the stream ends or
    the server goes away."""

    def __init__(self, url: str, model: str, request_id: str, max_tokens: int) -> None:
        body = {"model": model, "messages": [{"role": "user", "content": "energy " * 20}],
                "max_tokens": max_tokens, "ignore_eos": True, "stream": True}  # fmt: skip
        self.http = urllib.request.Request(
            f"{url}/v1/chat/completions",
            data=json.dumps(body).encode(),
            headers={"Content-Type": "application/json", "X-Request-Id": request_id},
        )
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
