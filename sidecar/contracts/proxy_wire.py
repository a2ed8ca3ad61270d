"""The OpenAI proxy's wire to the sidecar: per-request timings over UDP, prices over HTTP (stdlib only).

``jouletrace proxy`` runs in a process of its own (docs/proxy.md). It tells the
sidecar what each completion did with UDP datagrams to the sidecar's
``proxy_wire_port`` (:data:`DEFAULT_PORT`), and prices the provisional ``energy``
object in each response from the sheet the sidecar serves at
``GET /v1/prices`` (:class:`PriceSheet`). Stdlib only: the proxy process never
imports numpy or attribution.

**Datagrams.** One UTF-8 JSON object each, at most :data:`MAX_DATAGRAM_BYTES`::

    {"v": 1, "kind": "proxy", "pid": 4242, "seq": 17, "wall": 1764400000.123,
     "begin": [[request_id, arrival_ago_s, path, model, stream, task, tenant, traceparent, prompt_chars]],
     "chunks": [[request_id, first, [ago_us, ...]]],
     "usage": [[request_id, prompt_tokens, output_tokens]],
     "alive": [[request_id]],
     "end": [[request_id, end_ago_s, outcome, status, response_model]],
     "counts": {"streams": 12, "upstream_down": 1}}

``pid``     the proxy's process id; ``seq`` datagram number per pid from 0 (a gap: lost ones).
``wall``    Unix time when the datagram was built; every ``*_ago_s`` is how long before
            it something happened on the proxy's monotonic clock (no clock offset between
            processes enters; the receiver places it at ``its_clock(wall) - ago``).
``begin``   a completion seen for the first time: its path (one of :data:`COMPLETION_PATHS`),
            ``stream`` (true/false), and ``model``, ``task``, ``tenant``, ``traceparent``
            (strings, or null when unknown); ``prompt_chars`` the prompt's characters.
``chunks``  content chunks (a token each) in order: chunk number ``first`` (0 = the first
            token) and each later one's time, as whole microseconds before ``wall``
            (integers: a 200-stream proxy sends thousands a second, and JSON writes an
            integer four times faster than a rounded float).
``usage``   the token counts the engine reported.
``alive``   a request still being answered that had no other row for :func:`alive_every_s`
            (a plain answer the engine takes long to give, a long queue wait): the sidecar
            does not end it as gone quiet (an older sidecar ignores the section).
``end``     the request ended: ``outcome`` (one of :data:`OUTCOMES`), the upstream's HTTP
            ``status`` (0: none), the model the answer named (or null).
``counts``  the proxy's own counters since it started (requests by outcome, fields it
            rejected, its sender's and price fetch's troubles), names from
            :data:`PROXY_COUNTS`; every datagram carries them, and the proxy sends one
            at least every :data:`HEARTBEAT_S` even with no rows.

A request's ``begin`` row comes in the same or an earlier datagram than its other
rows; rows of one datagram are read in the order above. A long message is split
between rows (:func:`encode`); a row alone over the limit is dropped (a ``chunks``
row never is: the sender cuts chunk lists at :data:`MAX_CHUNKS_PER_ROW`). The
receiver (``sidecar.taps.proxy_wire``) checks every field and drops a bad row only.

**Prices.** ``GET /v1/prices`` on the sidecar's API answers a :class:`PriceSheet` as
JSON (``to_json``); the proxy reads it with :meth:`PriceSheet.parse`, which raises
``ValueError`` for anything malformed.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any, NamedTuple

from sidecar.contracts.ports import PROXY_WIRE_PORT

__all__ = [
    "ALIVE_MAX_S",
    "COMPLETION_PATHS",
    "DEFAULT_PORT",
    "HEARTBEAT_S",
    "KIND",
    "MAX_AGO_US",
    "MAX_CHUNKS_PER_REQUEST",
    "MAX_CHUNKS_PER_ROW",
    "MAX_DATAGRAM_BYTES",
    "OUTCOMES",
    "PRICE_VERSION",
    "PRICE_WORK",
    "PROXY_COUNTS",
    "SECTIONS",
    "TRACEPARENT",
    "VERSION",
    "Alive",
    "Begin",
    "Chunks",
    "End",
    "Message",
    "PriceSheet",
    "Usage",
    "alive_every_s",
    "encode",
]

VERSION = 1
KIND = "proxy"
DEFAULT_PORT = PROXY_WIRE_PORT
MAX_DATAGRAM_BYTES = 60_000  # under the 64 KiB UDP limit on loopback
MAX_CHUNKS_PER_ROW = 2048  # chunk times per row (about 8 bytes each)
# chunks kept of one request (its times, by the proxy and by the sidecar): a content chunk is a token
# or more, so longer than any output; a stream past it has lost work (its energy unknown)
MAX_CHUNKS_PER_REQUEST = 131_072
MAX_AGO_US = 86_400_000_000  # a day: the furthest back a time may lie
COMPLETION_PATHS = ("/v1/chat/completions", "/v1/completions")
TRACEPARENT = re.compile(r"[0-9a-f]{2}-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}")  # W3C, lower case
OUTCOMES = ("ok", "error", "disconnected", "upstream_down", "upstream_broken")
SECTIONS = ("begin", "chunks", "usage", "alive", "end")
HEARTBEAT_S = 1.0
# a live request with nothing new is said to be alive at least this often (s): a sidecar whose
# request_timeout_s is shorter than the proxy's (each process reads its own knobs) waits for it
ALIVE_MAX_S = 5.0
PROXY_COUNTS = (  # the proxy's counters a datagram may carry (a fixed set: they become metric labels)
    "streams",
    "completions",
    "disconnected",
    "upstream_down",
    "upstream_broken",
    "upstream_bad_answer",  # an answer whose head could not be read (502)
    "too_large",
    "bodies_over_budget",
    "body_timeout",  # bodies that did not arrive within BODY_READ_TIMEOUT_S (408)
    "answer_too_large",
    "answer_too_deep",  # answers too deeply nested to re-encode: passed on as they came
    "upstream_retried",  # requests sent again on a fresh connection to the engine
    "malformed_sse",
    "malformed_json",
    "duplicate_request_id",
    "body",
    "usage",
    "request_id",
    "tenant",
    "task",
    "traceparent",
    "user",
    "model",
    "response_model",
    "host",  # Host headers no record URL could be built from (left out)
    "wire_send_errors",  # datagrams the proxy could not send
    "wire_dropped_rows",  # rows over the size limit
    "price_errors",  # price fetches that failed (sidecar unreachable, bad sheet)
)


class Begin(NamedTuple):
    request_id: str
    arrival_ago_s: float
    path: str
    model: str | None
    stream: bool
    task: str | None
    tenant: str | None
    traceparent: str | None
    prompt_chars: int


class Chunks(NamedTuple):
    request_id: str
    first: int  # the number of the first chunk listed (0: the first token)
    ago_us: list[int]  # each chunk's time, whole microseconds before wall


class Usage(NamedTuple):
    request_id: str
    prompt_tokens: int
    output_tokens: int


class Alive(NamedTuple):
    request_id: str


def alive_every_s(request_timeout_s: float) -> float:
    """How often (s) a live request with nothing new is said to be alive, on the wire and to attribution:
    a quarter of ``request_timeout_s`` (the sidecar ends a request not heard of for that long), at
    most :data:`ALIVE_MAX_S`."""
    return min(ALIVE_MAX_S, request_timeout_s / 4)


class End(NamedTuple):
    request_id: str
    end_ago_s: float
    outcome: str
    status: int
    response_model: str | None


class Message(NamedTuple):
    pid: int
    seq: int
    wall: float
    begin: list[Begin]
    chunks: list[Chunks]
    usage: list[Usage]
    end: list[End]
    counts: dict[str, int] = {}  # noqa: RUF012 (a NamedTuple default, never mutated)
    alive: list[Alive] = []  # noqa: RUF012 (a NamedTuple default, never mutated)


def _dumps(obj: Any) -> bytes:
    return json.dumps(obj, separators=(",", ":"), allow_nan=False).encode()


def encode(message: Message) -> list[bytes]:
    """``message`` as datagrams numbered ``seq``, ``seq + 1``, ... (the sender advances by their count).

    Usually one; a long message is split in two halves of its rows (in order) until
    each part fits. A single row over the limit is dropped.
    """
    head = {
        "v": VERSION,
        "kind": KIND,
        "pid": message.pid,
        "seq": message.seq,
        "wall": message.wall,
        "counts": message.counts,
    }
    rows = [(key, row) for key in SECTIONS for row in getattr(message, key)]
    parts: list[bytes] = []
    _pack(head, rows, parts)
    return parts


def _pack(head: dict[str, Any], rows: list[tuple[str, Any]], out: list[bytes]) -> None:
    """``rows`` as one datagram appended to ``out`` (numbered after those already there), or halved."""
    doc: dict[str, Any] = dict(head, seq=head["seq"] + len(out))
    for key in SECTIONS:
        doc[key] = [row for k, row in rows if k == key]
    data = _dumps(doc)
    if len(data) <= MAX_DATAGRAM_BYTES:
        out.append(data)
    elif len(rows) > 1:
        half = len(rows) // 2
        _pack(head, rows[:half], out)
        _pack(head, rows[half:], out)


# ---- prices -------------------------------------------------------------------------------

PRICE_VERSION = 1
# the fitted model's work terms, in the order of its coefficients and covariance
# (sidecar.attribution.fit.WORK; a test holds the two equal)
PRICE_WORK = ("steps", "prefill", "decode", "prefill_pairs", "decode_context", "denoise")
_PRICE_NUMBERS = (
    "floor_w",
    "j_per_step",
    "j_per_prefill_token",
    "j_per_decode_token",
    "j_per_prefill_pair",
    "j_per_context_token",
    "r2",
    "power_w",
)


class PriceSheet(NamedTuple):
    """What a request's work is priced with: the live fitted model's coefficients (units in the names).

    ``fitted`` False: no fit yet, price by ``power_w`` (the devices' current power).
    ``cov``: the covariance of the work coefficients in :data:`PRICE_WORK` order
    (J^2 per unit^2), when the split rule gives intervals (the fitted rule); None otherwise.
    """

    source: str  # the meter's energy source: measured, estimate, simulated, replay
    fitted: bool
    floor_w: float = 0.0
    j_per_step: float = 0.0
    j_per_prefill_token: float = 0.0
    j_per_decode_token: float = 0.0
    j_per_prefill_pair: float = 0.0
    j_per_context_token: float = 0.0
    r2: float = 0.0
    power_w: float = 0.0
    cov: tuple[tuple[float, ...], ...] | None = None

    def to_json(self) -> dict[str, Any]:
        """The ``GET /v1/prices`` body."""
        doc: dict[str, Any] = {"v": PRICE_VERSION, "source": self.source, "fitted": self.fitted}
        doc.update({name: getattr(self, name) for name in _PRICE_NUMBERS})
        doc["work"] = list(PRICE_WORK)
        doc["cov"] = None if self.cov is None else [list(row) for row in self.cov]
        return doc

    @classmethod
    def parse(cls, doc: Any) -> PriceSheet:
        """A received sheet; ``ValueError`` (saying what) for anything malformed."""
        if not isinstance(doc, dict) or doc.get("v") != PRICE_VERSION:
            raise ValueError("not a jouletrace v1 price sheet")
        source, fitted = doc.get("source"), doc.get("fitted")
        if not (isinstance(source, str) and 0 < len(source) <= 32 and source.isprintable()):
            raise ValueError("bad 'source'")
        if not isinstance(fitted, bool):
            raise ValueError("bad 'fitted'")
        numbers = [_finite(doc.get(name), name) for name in _PRICE_NUMBERS]
        cov = doc.get("cov")
        if cov is not None:
            if doc.get("work") != list(PRICE_WORK):
                raise ValueError("'work' is not the terms this proxy prices")
            n = len(PRICE_WORK)
            if not (isinstance(cov, list) and len(cov) == n and all(isinstance(r, list) for r in cov)):
                raise ValueError(f"'cov' is not {n} rows")
            if any(len(r) != n for r in cov):
                raise ValueError(f"'cov' is not {n} x {n}")
            cov = tuple(tuple(_finite(x, "cov") for x in row) for row in cov)
        floor_w, step, prefill, decode, pair, context, r2, power_w = numbers
        return cls(source, fitted, floor_w, step, prefill, decode, pair, context, r2, power_w, cov)


def _finite(value: Any, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"{name!r} is not a number")
    try:
        x = float(value)
    except OverflowError:
        raise ValueError(f"{name!r} is too large") from None
    if not math.isfinite(x):
        raise ValueError(f"{name!r} is not finite")
    return x
