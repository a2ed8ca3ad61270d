"""The datagram format between the vLLM stat-logger plugin and the sidecar (stdlib only).

One UDP datagram per engine iteration (per ``record()`` call with stats),
compact JSON, at most :data:`MAX_DATAGRAM_BYTES`. The plugin imports this module
inside vLLM, so it must stay free of numpy, grpc and the rest of the sidecar.

Keys (times in seconds; ``*_ago`` is how long before ``wall`` a thing happened,
measured on the plugin's monotonic clock, so no cross-process clock offset enters):

``v``      format version (1)
``pid``    the vLLM front-end process id (a new pid means vLLM restarted)
``seq``    message number per pid, from 0 (gaps mean lost datagrams)
``wall``   Unix time of the ``record()`` call
``model``  served model name
``it``     the iteration, or absent on a scheduler-only heartbeat:
           ``[end_ago, generation_tokens, prompt_computed, prompt_cached, preempted]``
``sched``  ``[running, waiting, kv_cache_usage (0..1)]``
``start``  requests whose prefill finished in this iteration (first token):
           ``[[request_id, prompt_tokens, computed_tokens, prefill_s], ...]``
``fin``    finished requests: ``[[request_id, prompt_tokens, generation_tokens, queued_s,
           prefill_s, decode_s, e2e_s, finish_reason], ...]``
``gone``   (at most once a second) started requests that left vLLM without finishing (aborted)
``live``   true when the plugin sees per-request starts (``start`` is complete)
"""

from __future__ import annotations

import json
from typing import Any

__all__ = ["MAX_DATAGRAM_BYTES", "VERSION", "decode", "encode"]

VERSION = 1
MAX_DATAGRAM_BYTES = 60_000  # under the 64 KiB UDP limit on loopback
_MAX_ROWS = 150  # request rows per datagram; more go into follow-up datagrams


def encode(message: dict[str, Any]) -> list[bytes]:
    """One message as one or more datagrams (long ``start``/``fin`` lists are split).

    Follow-up datagrams carry only their rows (no ``it``), so iteration totals are
    counted once. Rows that alone exceed the size limit are dropped.
    """
    starts: list[Any] = message.get("start") or []
    fins: list[Any] = message.get("fin") or []
    head = {k: v for k, v in message.items() if k not in ("start", "fin")}
    out: list[bytes] = []
    first = True
    i = j = 0
    while first or i < len(starts) or j < len(fins):
        keep = head if first else {k: v for k, v in head.items() if k in ("v", "pid", "seq", "wall", "model")}
        part: dict[str, Any] = dict(keep)
        part["start"] = starts[i : i + _MAX_ROWS]
        part["fin"] = fins[j : j + _MAX_ROWS]
        i += _MAX_ROWS
        j += _MAX_ROWS
        data = json.dumps(part, separators=(",", ":")).encode()
        if len(data) <= MAX_DATAGRAM_BYTES:
            out.append(data)
        first = False
    return out


def decode(data: bytes) -> dict[str, Any]:
    """Parse one datagram; raises ``ValueError`` for anything that is not a v1 message."""
    try:
        message = json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ValueError(f"not JSON: {err}") from err
    if not isinstance(message, dict) or message.get("v") != VERSION:
        raise ValueError("not a jouletrace v1 message")
    for key, kind in (("pid", int), ("seq", int), ("wall", (int, float))):
        if not isinstance(message.get(key), kind):
            raise ValueError(f"bad or missing {key!r}")
    for key in ("start", "fin"):
        rows = message.get(key, [])
        if not isinstance(rows, list) or not all(isinstance(r, list) and r for r in rows):
            raise ValueError(f"bad {key!r}")
    it = message.get("it")
    if it is not None and (not isinstance(it, list) or len(it) < 3):
        raise ValueError("bad 'it'")
    return message
